"""Read ``retina.train`` checkpoints without unpickling code (``weights_only=True``)."""

from __future__ import annotations

import typing
from collections import defaultdict
from pathlib import Path

import torch

from retina.eval import load_checkpoint


def _omegaconf_globals() -> list:
    """OmegaConf container classes, plain data holders that Lightning may pickle.

    ``DetectionDataModule.save_hyperparameters`` stores list options such as
    ``scale_jitter`` as ``ListConfig``, which ``weights_only=True`` refuses by default.
    """
    from omegaconf import DictConfig, ListConfig
    from omegaconf.base import ContainerMetadata, Metadata
    from omegaconf.nodes import AnyNode

    return [DictConfig, ListConfig, ContainerMetadata, Metadata, AnyNode, typing.Any, defaultdict,
            dict, list, int]


def read_checkpoint(path: str | Path) -> dict:
    """A ``retina.train`` checkpoint as a dict, loaded with ``weights_only=True``.

    Like :func:`retina.eval.load_checkpoint`, and also reads checkpoints whose datamodule
    hyper-parameters hold OmegaConf containers: those classes (and only those) are
    allow-listed for the weights-only unpickler.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a loadable PyTorch file, or not a retina training checkpoint;
            the message names ``path``.
    """
    try:
        return load_checkpoint(str(path))
    except ValueError as err:
        if "omegaconf" not in str(err):
            raise
    with torch.serialization.safe_globals(_omegaconf_globals()):
        return load_checkpoint(str(path))
