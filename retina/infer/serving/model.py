"""The model a server runs: loaded once, checked with one image, described for ``/info``.

:func:`load_served` is the one place the runtime is chosen. ``runtime=auto|eager`` run a
checkpoint or a safetensors export on eager PyTorch; TorchScript (``.pt``) and ONNX
(``.onnx``) exports run as ``retina.load`` reads them (TorchScript, ONNX Runtime). When
``retina.load`` takes ``runtime=`` itself (eager, ONNX Runtime, OpenVINO), this function
passes it on and :data:`RUNTIMES` grows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from retina.cli import suggest
from retina.export.formats import KIND_OF_SUFFIX
from retina.infer.predictor import Predictor
from retina.infer.runtimes import GraphPredictor, load
from retina.schema import package_version

RUNTIMES = ("auto", "eager")
RUNTIME_OF_KIND = {"checkpoint": "eager", "safetensors": "eager", "torchscript": "torchscript",
                   "onnx": "onnxruntime"}


@dataclass
class Served:
    """A loaded model and what ``/info`` says of it."""

    predictor: Predictor | GraphPredictor
    path: Path
    kind: str  # checkpoint, safetensors, torchscript, onnx
    runtime: str  # eager, torchscript, onnxruntime
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


def check_runtime(path: str | Path, runtime: str) -> str:
    """The file's kind, or ValueError naming ``runtime`` or the suffix."""
    path = Path(path)
    kind = KIND_OF_SUFFIX.get(path.suffix.lower())
    if kind is None:
        raise ValueError(f"model={path}: unknown model file type; expected one of "
                         f"{', '.join(KIND_OF_SUFFIX)}")
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime={runtime!r}: expected one of {', '.join(RUNTIMES)}"
                         f"{suggest(runtime, RUNTIMES)}")
    if runtime == "eager" and RUNTIME_OF_KIND[kind] != "eager":
        raise ValueError(f"runtime=eager runs checkpoints and safetensors exports; {path.name} "
                         f"runs on {RUNTIME_OF_KIND[kind]}: use runtime=auto")
    return kind


def load_served(path: str | Path, runtime: str = "auto", device: str = "cpu") -> Served:
    """Load ``path`` for serving and run it once on a blank image (so that the first request
    does not pay for the lazy set-up: folded batch norms, graph optimisation).

    Raises:
        FileNotFoundError, ValueError: the message names the file or option.
    """
    kind = check_runtime(path, runtime)
    predictor = load(path, device=device)  # TODO(#32): load(path, device, runtime=runtime)
    side = int(predictor.meta.size or predictor.meta.min_size or 256)
    predictor([torch.zeros(3, side, side, dtype=torch.uint8)])
    device = str(predictor.device) if isinstance(predictor, Predictor) else "cpu"
    return Served(predictor, Path(path), kind, RUNTIME_OF_KIND[kind], device)
