"""What saved files say: registered names for the package's classes, and schema versions.

Checkpoints (their run config) and exports (the ``model`` part of their metadata) outlive the
code. They name the classes to build by the short names of :data:`REGISTRY` (``{"_type_":
"head/gfl", ...}``), never by import path, so moving or renaming a class changes one line of
:data:`REGISTRY` and every file users hold still loads. In memory, configs keep Hydra's
``_target_`` import paths (jump-to-definition works in ``retina/conf``): :func:`to_saved` and
:func:`from_saved` translate at the file's edge.

Schema versions of a saved config:

1. import paths of the first layout (``retina.lit``, ``model.anchors`` beside the detector,
   the coder inside the postprocess and the loss);
2. import paths of the layout of 2026-12-01 (``retina.training.module``, ``retina.ops``, ...);
3. registered names (this one).

Files of versions 1 and 2 are read through a frozen table of the paths they hold
(:data:`PATHS_OF_VERSION_2`) into names, then built like version 3: later moves never break
them.

Below every layer (any module may import it): the standard library only.
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
import zipfile
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 3
READS_VERSIONS = (1, 2, 3)
NAME_KEY = "_type_"  # in saved configs, where Hydra's configs have ``_target_``
TARGET_KEY = "_target_"
DISTRIBUTION = "retina-det"  # the name pip installs the package by (import name: retina)

# Registered name -> where the class (or factory) lives now. Moving one: change its line here.
REGISTRY: dict[str, str] = {
    "module/detection": "retina.training.module.DetectionModule",
    "detector/dense": "retina.model.detector.Detector",
    "backbone/resnet": "retina.model.backbone.resnet",
    "backbone/mobilenet_v2": "retina.model.backbone.mobilenet_v2",
    "backbone/torchvision": "retina.model.backbone.torchvision_backbone",
    "backbone/timm": "retina.model.timm_backbone.TimmBackbone",
    "head/retinanet": "retina.model.head.RetinaHead",
    "head/gfl": "retina.model.gfl_head.GFLHead",
    "anchors/grid": "retina.model.anchors.AnchorGenerator",
    "coder/delta": "retina.ops.boxes.DeltaCoder",
    "coder/distance": "retina.ops.boxes.DistanceCoder",
    "postprocess/nms": "retina.ops.postprocess.Postprocess",
    "loss/focal": "retina.losses.retinanet.RetinaNetCriterion",
    "loss/softmax_focal": "retina.losses.retinanet.SoftmaxFocalCriterion",
    "loss/ohem": "retina.losses.retinanet.OHEMCriterion",
    "loss/ghm": "retina.losses.retinanet.GHMCriterion",
    "loss/gfl": "retina.losses.gfl.GFLCriterion",
    "assigner/max_iou": "retina.assign.MaxIoUAssigner",
    "assigner/atss": "retina.assign.ATSSAssigner",
    "sched/cosine": "retina.training.schedules.warmup_cosine",
    "sched/multistep": "retina.training.schedules.warmup_multistep",
    "data/detection": "retina.data.DetectionDataModule",
    "data/converted": "retina.data.to_coco.converted_datamodule",
    "data/prepare_neon": "retina.data.neon.prepare_neon",
    "callback/progress": "retina.training.progress.RunProgressBar",
}

# Frozen: the import paths that files of versions 1 and 2 hold (version 1's after
# :data:`RENAMED_IN_VERSION_2`), and the name each stands for. Never edit for a move.
PATHS_OF_VERSION_2: dict[str, str] = {
    "retina.training.module.DetectionModule": "module/detection",
    "retina.model.detector.Detector": "detector/dense",
    "retina.model.backbone.resnet": "backbone/resnet",
    "retina.model.backbone.mobilenet_v2": "backbone/mobilenet_v2",
    "retina.model.head.RetinaHead": "head/retinanet",
    "retina.model.gfl_head.GFLHead": "head/gfl",
    "retina.model.anchors.AnchorGenerator": "anchors/grid",
    "retina.ops.boxes.DeltaCoder": "coder/delta",
    "retina.ops.boxes.DistanceCoder": "coder/distance",
    "retina.ops.postprocess.Postprocess": "postprocess/nms",
    "retina.losses.retinanet.RetinaNetCriterion": "loss/focal",
    "retina.losses.retinanet.SoftmaxFocalCriterion": "loss/softmax_focal",
    "retina.losses.retinanet.OHEMCriterion": "loss/ohem",
    "retina.losses.retinanet.GHMCriterion": "loss/ghm",
    "retina.losses.gfl.GFLCriterion": "loss/gfl",
    "retina.assign.MaxIoUAssigner": "assigner/max_iou",
    "retina.assign.ATSSAssigner": "assigner/atss",
    "retina.training.schedules.warmup_cosine": "sched/cosine",
    "retina.training.schedules.warmup_multistep": "sched/multistep",
    "retina.data.DetectionDataModule": "data/detection",
    "retina.data.convert.converted_datamodule": "data/converted",
    "retina.data.neon.prepare_neon": "data/prepare_neon",
    "retina.training.progress.RunProgressBar": "callback/progress",
}
# Frozen: module prefixes of version 1 -> version 2.
RENAMED_IN_VERSION_2 = {
    "retina.lit.": "retina.training.module.",
    "retina.boxes.": "retina.ops.boxes.",
    "retina.postprocess.": "retina.ops.postprocess.",
    "retina.criterion.": "retina.losses.retinanet.",
    "retina.gfl_criterion.": "retina.losses.gfl.",
    "retina.matcher.MaxIoUMatcher": "retina.assign.MaxIoUAssigner",
    "retina.assigner.": "retina.assign.",
    "retina.schedules.": "retina.training.schedules.",
}
_NAME_OF_TARGET = {target: name for name, target in REGISTRY.items()}

# The model files retina.load reads, by suffix, and as what.
KIND_OF_SUFFIX = {
    ".json": "safetensors", ".safetensors": "safetensors", ".pt": "torchscript",
    ".ts": "torchscript", ".torchscript": "torchscript", ".onnx": "onnx", ".xml": "openvino",
    ".ckpt": "checkpoint",
}
MARKER = "retina-detector"  # the ``format`` of every export's metadata (the JSON sidecar)


class SchemaError(ValueError):
    """A saved config this code cannot read (unknown name or version); the message says which."""


def package_version() -> str:
    """The installed version of the package ("unknown" from a source tree not installed)."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def model_file_problem(path: str | Path, kinds: tuple[str, ...] | None = None) -> str | None:
    """What is wrong with a model file, found without loading it (the standard library only:
    the command line asks before torch is imported), or None.

    A suffix of :data:`KIND_OF_SUFFIX` (of ``kinds``, if given); a checkpoint or TorchScript
    file is a zip archive (PyTorch's format); a JSON sidecar is JSON with the retina marker.
    """
    path = Path(path)
    if not path.exists():
        return "no such file"
    kind = KIND_OF_SUFFIX.get(path.suffix.lower())
    allowed = {s: k for s, k in KIND_OF_SUFFIX.items() if kinds is None or k in kinds}
    if kind not in allowed.values():
        names = {"checkpoint": "a training checkpoint", "safetensors": "a safetensors export",
                 "torchscript": "a TorchScript export", "onnx": "an ONNX export", "openvino": "an OpenVINO export"}
        wanted = " or ".join(dict.fromkeys(names[k] for k in allowed.values()))
        what = f"{names[kind]}, not {wanted}" if kind else "not a model file"
        return f"{what}; expected {', '.join(allowed)}"
    if not path.is_file():
        return "no such file (it is a folder)"
    if kind in ("checkpoint", "torchscript") and not zipfile.is_zipfile(path):
        return f"not a readable {kind} (PyTorch's files are zip archives): cut short or another file"
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            return f"not JSON ({err})"
        if not isinstance(data, dict) or data.get("format") != MARKER:
            return f"not retina export metadata (no format {MARKER!r})"
    return None


def _map_nodes(node: Any, fn) -> Any:
    """``node`` with ``fn`` applied to every dict in it, innermost first."""
    if isinstance(node, dict):
        return fn({k: _map_nodes(v, fn) for k, v in node.items()})
    if isinstance(node, list):
        return [_map_nodes(v, fn) for v in node]
    return node


def unregistered_targets(config: Any) -> list[str]:
    """The package's import paths in ``config`` that :data:`REGISTRY` does not name (they would
    be saved as paths)."""
    found: list[str] = []

    def visit(node: dict) -> dict:
        target = node.get(TARGET_KEY)
        if isinstance(target, str) and target.startswith("retina.") and (
                target not in _NAME_OF_TARGET):
            found.append(target)
        return node

    _map_nodes(config, visit)
    return found


def to_saved(config: Any) -> Any:
    """A plain config with the package's ``_target_`` paths replaced by registered names
    (``{"_type_": "head/gfl"}``); other targets (torch, Lightning, a user's own classes) stay
    import paths."""

    def name(node: dict) -> dict:
        target = node.get(TARGET_KEY)
        if target not in _NAME_OF_TARGET:
            return node
        return {NAME_KEY if k == TARGET_KEY else k: _NAME_OF_TARGET[target] if k == TARGET_KEY
                else v for k, v in node.items()}

    return _map_nodes(copy.deepcopy(config), name)


def from_saved(config: Any, origin: str = "the file") -> Any:
    """The inverse of :func:`to_saved`: registered names -> today's ``_target_`` paths.

    Raises:
        SchemaError: a name this version does not register (the message names it and
            ``origin``, with the names of that kind).
    """

    def target(node: dict) -> dict:
        name = node.get(NAME_KEY)
        if name is None:
            return node
        if name not in REGISTRY:
            kind = str(name).split("/")[0]
            known = [n for n in REGISTRY if n.startswith(kind + "/")] or list(REGISTRY)
            raise SchemaError(f"{origin} names {name!r}, which this retina ({package_version()}) "
                              f"does not know; it knows {', '.join(known)}")
        return {TARGET_KEY if k == NAME_KEY else k: REGISTRY[name] if k == NAME_KEY else v
                for k, v in node.items()}

    return _map_nodes(config, target)


# --- versions 1 and 2 ------------------------------------------------------------------------

def _names_of_paths(config: Any) -> Any:
    """Version 1-2 import paths (version 1's renamed first) -> registered names."""

    def name(node: dict) -> dict:
        target = node.get(TARGET_KEY)
        if not isinstance(target, str):
            return node
        for old, new in RENAMED_IN_VERSION_2.items():
            if target.startswith(old):
                target = new + target[len(old):]
        node = {**node, TARGET_KEY: target}
        if target not in PATHS_OF_VERSION_2:
            return node
        return {NAME_KEY if k == TARGET_KEY else k: PATHS_OF_VERSION_2[target]
                if k == TARGET_KEY else v for k, v in node.items()}

    return _map_nodes(copy.deepcopy(config), name)


def _criterion_of_version_1(loss: dict) -> dict:
    loss.pop("coder", None)  # the model's coder since version 2
    loss.pop("background_class", None)  # a class attribute of the criterion since version 2
    if "matcher" in loss:
        loss["assigner"] = loss.pop("matcher")
    loss["_partial_"] = True
    return loss


def _model_layout_of_version_1(model: dict) -> dict:
    """Version 1's ``model`` (``anchors`` beside the detector, the head built with
    ``num_anchors``/``num_levels``/``in_channels``, the coder inside the postprocess and the
    loss) in version 2's layout (``detector.anchors``, the head a partial that the Detector
    completes, one ``model.coder``); ``postprocess.float64_nms`` (the NMS is exact without
    it) is dropped from both."""
    if isinstance(model.get("postprocess"), dict):
        model["postprocess"].pop("float64_nms", None)
    if "anchors" not in model:
        return model
    detector = model["detector"]
    detector["anchors"] = model.pop("anchors")
    head = detector["head"]
    for derived in ("num_anchors", "num_levels", "in_channels"):
        head.pop(derived, None)
    head["_partial_"] = True
    post = model["postprocess"]
    model["coder"] = post.pop("coder")
    post["_partial_"] = True
    if isinstance(model.get("criterion"), dict):
        model["criterion"] = _criterion_of_version_1(model["criterion"])
    return model


def _check_version(version: Any, origin: str) -> None:
    if version not in READS_VERSIONS:
        raise SchemaError(f"{origin} has schema version {version!r}; this retina "
                          f"({package_version()}) reads versions {list(READS_VERSIONS)}")


def load_model_config(model: dict, version: int, origin: str = "the file") -> dict:
    """A saved ``model`` config (of a run config or export metadata) of schema ``version`` as
    today's Hydra config."""
    _check_version(version, origin)
    if version < 3:
        model = _names_of_paths(_model_layout_of_version_1(copy.deepcopy(model)))
    return from_saved(model, origin)


def save_run_config(run: dict) -> dict:
    """A resolved run config as a checkpoint stores it: registered names, and its
    ``schema_version`` first."""
    return {"schema_version": SCHEMA_VERSION, **to_saved(run)}


def load_run_config(saved: dict, origin: str = "the checkpoint") -> dict:
    """A checkpoint's stored run config (any version) as today's Hydra config (no
    ``schema_version``)."""
    run = copy.deepcopy(saved)
    version = run.pop("schema_version", 2)  # versions 1 and 2 had none
    _check_version(version, origin)
    if version < 3:
        run["model"] = _model_layout_of_version_1(run["model"])
        if isinstance(run.get("loss"), dict) and "coder" in run["loss"]:
            run["loss"] = _criterion_of_version_1(run["loss"])
        run = _names_of_paths(run)
    return from_saved(run, origin)
