"""Evaluate a checkpoint with pycocotools: ``python -m retina.eval ckpt_path=FILE [data=...]``."""

from __future__ import annotations

import json
import logging
import typing
from collections import defaultdict
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def _omegaconf_globals() -> list:
    """OmegaConf's plain data holders, which Lightning may pickle into hyper-parameters
    (list options such as ``data.scale_jitter`` in checkpoints written before they were
    stored as tuples); ``weights_only=True`` refuses them unless allow-listed."""
    from omegaconf import DictConfig, ListConfig
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


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Rebuild the model from the checkpoint's config, validate on ``cfg.data`` or its own data."""
    ckpt = load_checkpoint(cfg.ckpt_path)
    hp = ckpt["hyper_parameters"]
    run = OmegaConf.create(json.loads(hp["run_config"]))
    run.model.detector.backbone.weights = None  # the checkpoint holds the trained weights
    data_cfg = cfg.data if cfg.get("data") else run.data
    datamodule = instantiate(data_cfg)
    datamodule.prepare_data()
    datamodule.setup("validate")
    module = instantiate(run.model, class_names=hp["class_names"], cat_ids=hp["cat_ids"], run_config=hp["run_config"])
    module.load_state_dict(ckpt["state_dict"])
    trainer = L.Trainer(
        accelerator=cfg.accelerator, devices=1, logger=False, enable_checkpointing=False,
        enable_model_summary=False,
    )
    trainer.validate(module, datamodule=datamodule, verbose=False)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    print(module.last_coco_table)
    print(json.dumps(metrics, indent=2))
    return metrics


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
