"""Checkpoints of ``retina.train``: read them safely and rebuild the trained module.

A checkpoint stores the resolved run config as JSON (``hyper_parameters.run_config``);
:func:`module_from_checkpoint` is the one place a model is rebuilt from it (``retina.eval``,
the export and the notebooks' analysis all call it). Checkpoints written before the
package took its current layout (``retina.lit``, ``model.anchors``, a coder in the loss)
are read through :func:`upgrade_model_config`.
"""

from __future__ import annotations

import copy
import json
import typing
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

# Old module path -> new, for the ``_target_`` of checkpoints written before the layout change.
LEGACY_TARGETS = {
    "retina.lit.": "retina.training.module.",
    "retina.boxes.": "retina.ops.boxes.",
    "retina.postprocess.": "retina.ops.postprocess.",
    "retina.criterion.": "retina.losses.retinanet.",
    "retina.gfl_criterion.": "retina.losses.gfl.",
    "retina.matcher.MaxIoUMatcher": "retina.assign.MaxIoUAssigner",
    "retina.assigner.": "retina.assign.",
    "retina.schedules.": "retina.training.schedules.",
}


def _omegaconf_globals() -> list:
    """OmegaConf's plain data holders, which Lightning may pickle into hyper-parameters
    (list options such as ``data.scale_jitter`` in checkpoints written before they were
    stored as tuples); ``weights_only=True`` refuses them unless allow-listed."""
    from omegaconf import ListConfig
    from omegaconf.base import ContainerMetadata, Metadata
    from omegaconf.nodes import AnyNode

    return [DictConfig, ListConfig, ContainerMetadata, Metadata, AnyNode, typing.Any, defaultdict,
            dict, list, int]


def load_checkpoint(path: str | Path) -> dict:
    """A Lightning checkpoint written by ``retina.train``, loaded with ``weights_only=True``
    (OmegaConf containers allow-listed, no other code).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a loadable PyTorch file, or not a retina training checkpoint;
            the message names ``path``.
    """
    try:
        with torch.serialization.safe_globals(_omegaconf_globals()):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint not found: {path}") from None
    except Exception as err:
        raise ValueError(f"{path} is not a loadable PyTorch checkpoint: {err}") from err
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "run_config" not in ckpt.get(
        "hyper_parameters", {}
    ):
        raise ValueError(f"{path} is not a retina training checkpoint (no state_dict/config)")
    return ckpt


def _rename_targets(node: Any) -> Any:
    if isinstance(node, dict):
        out = {k: _rename_targets(v) for k, v in node.items()}
        target = out.get("_target_")
        for old, new in LEGACY_TARGETS.items():
            if isinstance(target, str) and target.startswith(old):
                out["_target_"] = new + target[len(old):]
        return out
    if isinstance(node, list):
        return [_rename_targets(v) for v in node]
    return node


def _upgrade_criterion(loss: dict) -> dict:
    loss.pop("coder", None)  # the model's coder now
    loss.pop("background_class", None)  # a class attribute of the criterion now
    if "matcher" in loss:
        loss["assigner"] = loss.pop("matcher")
    loss["_partial_"] = True
    return loss


def upgrade_model_config(model: dict) -> dict:
    """A ``model`` config (or the ``model`` part of export metadata) of the layout before
    ``retina.assign``/``retina.ops`` in today's layout; today's configs come back unchanged.

    Before: ``model.anchors`` beside the detector, the head built by Hydra with
    ``num_anchors``/``num_levels``/``in_channels``, the coder inside the postprocess (and
    a second copy inside the loss). Now: ``model.detector.anchors``, the head a partial
    that the Detector completes, one ``model.coder``. ``postprocess.float64_nms`` is
    dropped: the NMS is exact without it.
    """
    model = _rename_targets(copy.deepcopy(model))
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
        model["criterion"] = _upgrade_criterion(model["criterion"])
    return model


def upgrade_run_config(run: dict) -> dict:
    """A checkpoint's run config in today's layout (see :func:`upgrade_model_config`)."""
    run = _rename_targets(run)
    run["model"] = upgrade_model_config(run["model"])
    if isinstance(run.get("loss"), dict) and "coder" in run["loss"]:
        run["loss"] = _upgrade_criterion(run["loss"])
    return run


def run_config(ckpt: dict) -> DictConfig:
    """The run config stored in a checkpoint, in today's layout."""
    return OmegaConf.create(upgrade_run_config(json.loads(ckpt["hyper_parameters"]["run_config"])))


def module_from_checkpoint(ckpt: dict | str | Path):
    """The trained :class:`~retina.training.module.DetectionModule` of a checkpoint (a path
    or the dict of :func:`load_checkpoint`), weights loaded, in eval mode."""
    ckpt = ckpt if isinstance(ckpt, dict) else load_checkpoint(ckpt)
    hp = ckpt["hyper_parameters"]
    run = run_config(ckpt)
    run.model.detector.backbone.weights = None  # the checkpoint holds the trained weights
    if "init_from" in run.model:
        run.model.init_from = None  # so does it for the file training started from
    if run.model.get("compile"):
        run.model.compile = False  # evaluating a compiled run need not compile (minutes on CPU)
    module = instantiate(run.model, class_names=hp["class_names"], cat_ids=hp["cat_ids"],
                         run_config=json.dumps(OmegaConf.to_container(run)))
    module.load_state_dict(ckpt["state_dict"])
    return module.eval()
