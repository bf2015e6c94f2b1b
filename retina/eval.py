"""Evaluate a checkpoint with pycocotools: ``python -m retina.eval ckpt_path=FILE [data=...]``."""

from __future__ import annotations

import json
import logging

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def load_checkpoint(path: str) -> dict:
    """A Lightning checkpoint written by ``retina.train`` (loaded with ``weights_only=True``)."""
    try:
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
