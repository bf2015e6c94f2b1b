"""The model a server runs: loaded once, checked with one image, described for ``/info``.

The runtime is ``retina.load``'s (``retina.infer.runtimes``): ``runtime=auto`` runs a
checkpoint or safetensors export in ONNX Runtime through the graph cached beside it
(exported on the first start with that file), an export in its own runtime; ``eager``,
``onnx``, ``openvino`` as asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from retina.infer.predictor import Predictor
from retina.infer.runtimes import GraphPredictor, load
from retina.schema import KIND_OF_SUFFIX, package_version


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
    does not pay for the lazy set-up: the cached graph, folded batch norms, graph
    optimisation).

    Raises:
        FileNotFoundError, ValueError: the message names the file or option.
    """
    predictor = load(path, device=device, runtime=runtime)
    side = int(predictor.meta.size or predictor.meta.min_size or 256)
    predictor([torch.zeros(3, side, side, dtype=torch.uint8)])
    eager = isinstance(predictor, Predictor)
    return Served(predictor, Path(path), KIND_OF_SUFFIX[Path(path).suffix.lower()],
                  "eager" if eager else predictor.runtime,
                  str(predictor.device) if eager else "cpu")
