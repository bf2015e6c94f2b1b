"""The model a server runs: loaded once, checked with one image, described for ``/info``.

The runtime is ``retina.load``'s (``retina.infer.runtimes``): ``runtime=auto`` runs a
checkpoint or safetensors export in ONNX Runtime through the graph cached beside it, an
export in its own runtime; ``eager``, ``onnx``, ``openvino`` as asked. On the first start
with a file whose graph is not in the cache yet, ``auto`` serves eager at once and builds
the graph in a background thread, then switches to it (one log line; ``/info`` says which
runs), so that the server answers as soon as the model is loaded.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from retina.infer.graph_cache import CachedGraphPredictor
from retina.infer.predictor import Predictor
from retina.infer.runtimes import GraphPredictor, load
from retina.schema import KIND_OF_SUFFIX, package_version

log = logging.getLogger(__name__)


@dataclass
class Served:
    """A loaded model and what ``/info`` says of it."""

    predictor: Predictor | GraphPredictor
    path: Path
    kind: str  # checkpoint, safetensors, torchscript, onnx, openvino
    runtime: str  # eager, torchscript, onnx, openvino
    device: str

    @property
    def class_names(self) -> list[str]:
        return self.predictor.class_names

    @property
    def cat_ids(self) -> list[int]:
        return self.predictor.cat_ids

    def predict(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        return [{k: v.cpu() for k, v in d.items()} for d in self.predictor(images)]

    def predict_large(self, image: Tensor, tile: int, batch: int) -> dict[str, Tensor]:
        return self.predictor.predict_large(image, tile=tile, batch_size=batch)

    def info(self) -> dict[str, Any]:
        """Model, classes, input rules, runtime and version (``GET /info``)."""
        meta = self.predictor.meta
        post = meta.model.get("postprocess", {})
        return {
            "model": self.path.name,
            "format": self.kind,
            "runtime": self.runtime,
            "device": self.device,
            "version": package_version(),
            "classes": [{"label": i, "category_id": c, "name": n}
                        for i, (n, c) in enumerate(zip(meta.class_names, meta.cat_ids))],
            "input": {k: getattr(meta, k) for k in ("size", "min_size", "max_size", "resize",
                                                    "graph_input_size")},
            "postprocess": {k: post.get(k) for k in ("score_thresh", "nms_thresh", "max_det")},
        }


def load_served(path: str | Path, runtime: str = "auto", device: str = "cpu") -> Served:
    """Load ``path`` for serving and run it once on a blank image (so that the first request
    does not pay for the lazy set-up: folded batch norms, graph optimisation); with
    ``runtime=auto`` and no cached graph yet, serve eager while it is built (module
    docstring).

    Raises:
        FileNotFoundError, ValueError: the message names the file or option.
    """
    predictor = load(path, device=device, runtime=runtime)
    if runtime == "auto" and isinstance(predictor, CachedGraphPredictor) and \
            not predictor.in_cache():
        served = warmed(predictor.source, path)
        threading.Thread(target=switch_when_built, args=(served, predictor), daemon=True,
                         name="retina-graph").start()
        return served
    return warmed(predictor, path)


def warm(predictor: Predictor | GraphPredictor) -> None:
    side = int(predictor.meta.size or predictor.meta.min_size or 256)
    predictor([torch.zeros(3, side, side, dtype=torch.uint8)])


def warmed(predictor: Predictor | GraphPredictor, path: str | Path) -> Served:
    """``predictor``, run once, as a :class:`Served`."""
    warm(predictor)
    eager = isinstance(predictor, Predictor)
    return Served(predictor, Path(path), KIND_OF_SUFFIX[Path(path).suffix.lower()],
                  "eager" if eager else predictor.runtime,
                  str(predictor.device) if eager else "cpu")


def switch_when_built(served: Served, graph: CachedGraphPredictor) -> None:
    """Build (export and load) ``graph``, then serve with it; on failure stay eager."""
    try:
        warm(graph)
    except Exception as err:  # noqa: BLE001 (any exporter or runtime error: keep serving)
        log.warning("runtime=auto: the graph was not built (%s); serving stays eager",
                    " ".join(str(err).split()))
        return
    served.predictor, served.runtime = graph, graph.runtime
    log.info("runtime=auto: now serving with %s (the graph is cached for the next start)",
                graph.runtime)
