"""Train and validate: ``python -m retina.train [overrides]`` (see conf/train.yaml), then write
the evaluation report of the best checkpoint into ``<run>/report`` (``~report``: none)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from retina.analysis.report import report_training_run
from retina.sweeps.job import run_job
from retina.training.run import train


def train_and_report(cfg: DictConfig) -> dict[str, float]:
    metrics = train(cfg)
    report_training_run(cfg)
    return metrics


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    # the optimized metric; in a sweep a failed job returns None
    return run_job(cfg, train_and_report)


if __name__ == "__main__":
    main()
