"""``model.init_from``: start from the Detector weights of another file.

The file is a retina checkpoint (``.ckpt``: ``retina.train``'s, or one written by
``retina convert`` from torchvision or mmdetection) or a safetensors export. Every
tensor of the Detector is loaded with strict checks on names and shapes, except the class
predictor ``head.cls_pred``: when the file predicts another number of classes (fine-tuning
on other data), it keeps its fresh initialisation at the prior and the log says so.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import OmegaConf
from torch import Tensor, nn

from retina.training.checkpoint import (
    detector_weights,
    load_checkpoint,
    read_run_config,
    run_config,
)

log = logging.getLogger(__name__)

CLASS_PREDICTOR = ("head.cls_pred.weight", "head.cls_pred.bias")
# Detector settings that may differ from the file's without a note (they change no weight)
FREE_SETTINGS = ("head.num_classes", "backbone.weights", "backbone.freeze_stages")


def read_detector_file(path: str | Path) -> tuple[dict[str, Tensor], dict | None]:
    """The Detector state dict of a ``.ckpt`` or ``.safetensors`` file, and the file's
    Detector config (None for safetensors, whose config is in the JSON sidecar)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model.init_from={path}: no such file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path)), None
    if path.suffix != ".ckpt":
        raise ValueError(f"model.init_from={path}: expected a retina .ckpt or .safetensors file")
    ckpt = load_checkpoint(path)
    return detector_weights(ckpt), OmegaConf.to_container(run_config(ckpt).model.detector)


def _leaves(node, prefix: str = ""):
    """(dotted key, value) of every leaf of a nested dict."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, f"{prefix}{key}.")
    else:
        yield prefix[:-1], node


def setting_differences(theirs: dict, ours: dict) -> list[str]:
    """Detector settings (dotted keys) that differ between two Detector configs, except
    those in :data:`FREE_SETTINGS`."""
    a, b = dict(_leaves(theirs)), dict(_leaves(ours))
    keys = sorted((set(a) | set(b)) - set(FREE_SETTINGS))
    return [f"{k}: {a.get(k)} in the file, {b.get(k)} here" for k in keys if a.get(k) != b.get(k)]


def init_detector(detector: nn.Module, path: str | Path, run_config_json: str | None = None
                  ) -> list[str]:
    """Load the Detector weights of ``path`` into ``detector``.

    Args:
        detector: a :class:`~retina.model.detector.Detector`.
        path: a retina ``.ckpt`` or ``.safetensors`` file.
        run_config_json: this run's config (``DetectionModule``'s ``run_config``); with a
            ``.ckpt`` file, Detector settings that differ from the file's are logged.

    Returns:
        the names of the tensors left at their initialisation: ``head.cls_pred.*`` when the
        file has another number of classes, else none.

    Raises:
        ValueError: a tensor of the Detector missing from the file, one the Detector lacks,
            or another shape (but the class predictor's); the message lists them all.
    """
    state, their_cfg = read_detector_file(path)
    own = detector.state_dict()
    kept = [k for k in CLASS_PREDICTOR if k in state and k in own  # only the class count differs
            and state[k].shape[0] != own[k].shape[0] and state[k].shape[1:] == own[k].shape[1:]]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(v.shape)} (here {tuple(own[k].shape)})" for k, v in state.items()
              if k in own and k not in kept and v.shape != own[k].shape]
    if missing or unexpected or shapes:
        raise ValueError(f"model.init_from={path} does not fit this model: missing {missing}, "
                         f"unexpected {unexpected}, other shapes {shapes}")
    detector.load_state_dict({**state, **{k: own[k] for k in kept}})
    if kept:
        per_anchor = detector.head.num_anchors
        log.info("model.init_from=%s: the class predictor %s is re-initialised with the prior "
                 "(the file predicts %d classes, this model %d); everything else is loaded",
                 path, ", ".join(kept), state[kept[0]].shape[0] // per_anchor,
                 own[kept[0]].shape[0] // per_anchor)
    log.info("model.init_from=%s: %d tensors loaded (names and shapes checked)", path,
             len(state) - len(kept))
    if their_cfg is not None and run_config_json:
        ours = read_run_config(run_config_json).get("model", {}).get("detector", {})
        diffs = setting_differences(their_cfg, ours)
        if diffs:
            log.warning("model.init_from=%s: Detector settings differ from the file's "
                        "(the weights fit, the outputs may not): %s", path, "; ".join(diffs))
    return kept
