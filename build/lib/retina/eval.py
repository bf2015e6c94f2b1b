"""Evaluate a checkpoint with pycocotools: ``python -m retina.eval ckpt_path=FILE [data=...]``."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from retina.training.run import evaluate


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
