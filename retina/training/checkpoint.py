"""Checkpoints of ``retina.train``: read them safely and rebuild the trained module.

A checkpoint stores the resolved run config as JSON (``hyper_parameters.run_config``), its
classes named by :mod:`retina.schema`'s registered names; :func:`module_from_checkpoint` is the
one place a model is rebuilt from it (``retina.eval``, the export and the notebooks' analysis
all call it). Checkpoints of every earlier schema version load the same way.
"""

from __future__ import annotations

import json
import logging
import typing
from collections import defaultdict
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from retina.schema import load_run_config, save_run_config, unregistered_targets

log = logging.getLogger(__name__)


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


def run_config_json(cfg: DictConfig) -> str:
    """The resolved run config (without Hydra's own node) as a checkpoint stores it: JSON with
    registered names instead of import paths (:func:`retina.schema.save_run_config`).

    A string, not a dict: ``instantiate`` would otherwise build every ``_target_`` in it.
    """
    run = OmegaConf.to_container(cfg, resolve=True)
    run.pop("hydra", None)
    for target in unregistered_targets(run):
        log.warning("%s has no registered name (retina.schema.REGISTRY): checkpoints store its "
                    "import path, which a later version may not find", target)
    return json.dumps(save_run_config(run))


def read_run_config(text: str, origin: str = "the checkpoint") -> dict:
    """A stored run config (JSON of any schema version) as today's plain config."""
    return load_run_config(json.loads(text), origin)


def run_config(ckpt: dict) -> DictConfig:
    """The run config stored in a checkpoint, as today's Hydra config."""
    return OmegaConf.create(read_run_config(ckpt["hyper_parameters"]["run_config"]))


def detector_weights(ckpt: dict) -> dict[str, torch.Tensor]:
    """The Detector's own state dict out of a checkpoint's module state dict."""
    return {k.removeprefix("detector."): v for k, v in ckpt["state_dict"].items()
            if k.startswith("detector.")}


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
                         run_config=run_config_json(run))
    module.load_state_dict(ckpt["state_dict"])
    return module.eval()
