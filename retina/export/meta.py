"""What an exported model needs besides its weights: architecture, classes, input rules.

Stored as the JSON sidecar of a safetensors export, as the ``retina.json`` extra file of
a TorchScript export and as the ``retina`` metadata entry of an ONNX export.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from retina.data.collate import SIZE_DIVISIBLE
from retina.schema import (
    MARKER,
    READS_VERSIONS,
    SCHEMA_VERSION,
    load_model_config,
    package_version,
    to_saved,
)
from retina.training.checkpoint import run_config

# The format versions are retina.schema's: 3, ``model`` names classes by registered names; 2,
# by import paths; 1, the first layout (``anchors`` beside the detector, the coder in the
# postprocess). Every version is read (``model`` as today's Hydra config).
FORMAT_VERSION = SCHEMA_VERSION
# The parts of the run config's ``model`` that build the inference path.
MODEL_PARTS = ("detector", "coder", "postprocess")


@dataclass
class ExportMeta:
    """Everything needed to rebuild and use a detector, as plain JSON-able values.

    Attributes:
        model: Hydra configs of ``detector`` (backbone weights null; with its anchors),
            ``coder`` and ``postprocess`` (score / NMS thresholds, top-k, max detections).
        class_names: name of each contiguous label 0..K-1.
        cat_ids: dataset category id of each label.
        size: fixed square input side of the eval resize, or None.
        min_size: short side of the eval resize, or None.
        max_size: cap of the long side of the eval resize, or None.
        resize: how the eval resize interpolates: "antialias" or "rcnn" (see
            ``retina.data.transforms``).
        size_divisible: network inputs are zero-padded to multiples of this.
        pixel_mean: per-channel mean of images in [0, 1] (the Detector's buffer; None:
            the Detector's default).
        pixel_std: per-channel std of images in [0, 1].
        retina_version: package version that wrote the export.
        source: where the weights came from (checkpoint path, epoch, step).
        graph_input_size: (h, w) the network runs at inside a TorchScript / ONNX graph.
    """

    model: dict[str, Any]
    class_names: list[str]
    cat_ids: list[int]
    size: int | None = None
    min_size: int | None = None
    max_size: int | None = None
    resize: str = "antialias"
    size_divisible: int = SIZE_DIVISIBLE
    pixel_mean: list[float] | None = None
    pixel_std: list[float] | None = None
    retina_version: str = field(default_factory=package_version)
    source: dict[str, Any] = field(default_factory=dict)
    graph_input_size: list[int] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_json(self) -> str:
        """The metadata as stored: ``model`` with registered names (see ``retina.schema``)."""
        data = asdict(self)
        data["model"] = to_saved(data["model"])
        return json.dumps({"format": MARKER, "format_version": FORMAT_VERSION, **data}, indent=2)

    @classmethod
    def from_json(cls, text: str, origin: str | Path) -> ExportMeta:
        """Parse and check a sidecar; errors name ``origin`` (the file it came from)."""
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{origin}: retina export metadata is not JSON ({err})") from None
        if not isinstance(data, dict) or data.get("format") != MARKER:
            raise ValueError(f"{origin} is not retina export metadata (no format {MARKER!r})")
        if data.get("format_version") not in READS_VERSIONS:
            raise ValueError(
                f"{origin} has export format version {data.get('format_version')}; this retina "
                f"({package_version()}) reads versions {list(READS_VERSIONS)}"
            )
        known = set(inspect.signature(cls).parameters)
        args = {k: v for k, v in data.items() if k in known}
        if isinstance(args.get("model"), dict):
            args["model"] = load_model_config(args["model"], data["format_version"], str(origin))
        missing = [k for k in ("model", "class_names", "cat_ids") if k not in args]
        parts = [p for p in MODEL_PARTS if p not in args.get("model", {})]
        if missing or parts:
            raise ValueError(f"{origin}: retina export metadata lacks {missing + parts}")
        if len(args["class_names"]) != len(args["cat_ids"]):
            raise ValueError(f"{origin}: class_names and cat_ids differ in length")
        return cls(**args)


def meta_from_checkpoint(ckpt: dict, path: str | Path) -> ExportMeta:
    """The metadata of a ``retina.train`` checkpoint (see ``retina.training.checkpoint``)."""
    hp = ckpt["hyper_parameters"]
    run = OmegaConf.to_container(run_config(ckpt))
    model = {part: run["model"][part] for part in MODEL_PARTS}
    model["detector"]["backbone"]["weights"] = None  # the export holds the trained weights
    data = run.get("data", {})
    return ExportMeta(
        model=model,
        class_names=list(hp["class_names"]),
        cat_ids=[int(c) for c in hp["cat_ids"]],
        size=data.get("size"),
        min_size=data.get("min_size"),
        max_size=data.get("max_size"),
        resize=data.get("resize") or "antialias",
        size_divisible=int(data.get("size_divisible") or SIZE_DIVISIBLE),
        source={"checkpoint": str(path), "epoch": ckpt.get("epoch"),
                "global_step": ckpt.get("global_step")},
    )
