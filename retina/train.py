"""Train and validate: ``retina train [overrides]`` (``python -m retina.train``; see
conf/train.yaml), then write the evaluation report of the best checkpoint into
``<run>/report`` (``~report``: none). Without ``experiment=``, the recipe follows the data
(``retina.conf.with_recipe``)."""

from __future__ import annotations

import sys

from omegaconf import DictConfig

from retina.analysis.report import report_training_run
from retina.cli import hydra_command
from retina.sweeps.job import run_job
from retina.training.run import train


def train_and_report(cfg: DictConfig) -> dict[str, float]:
    metrics = train(cfg)
    report_training_run(cfg)
    return metrics


def task(cfg: DictConfig) -> float | None:
    # the optimized metric; in a sweep a failed job returns None
    return run_job(cfg, train_and_report)


main = hydra_command("train", task)  # the recipe follows the data (retina.conf.with_recipe)


if __name__ == "__main__":
    sys.exit(main())
