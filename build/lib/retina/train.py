"""Train and validate: ``python -m retina.train [overrides]`` (see conf/train.yaml)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from retina.sweeps.job import run_job
from retina.training.run import train


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    return run_job(cfg, train)  # the optimized metric; in a sweep a failed job returns None


if __name__ == "__main__":
    main()
