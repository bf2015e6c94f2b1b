"""Train and validate: ``retina train [overrides]`` (``python -m retina.train``; see
conf/train.yaml), then write the evaluation report of the best checkpoint into
``<run>/report`` (``~report``: none). Without ``experiment=``, the recipe follows the data
(``retina.conf.with_recipe``)."""

from __future__ import annotations

import sys

from omegaconf import DictConfig

from retina.analysis.report import report_training_run
from retina.cli import hydra_command
from retina.conf import with_recipe
from retina.sweeps.job import run_job
from retina.training.run import train


def train_and_report(cfg: DictConfig) -> dict[str, float]:
    metrics = train(cfg)
    report_training_run(cfg)
    return metrics


def task(cfg: DictConfig) -> float | None:
    # the optimized metric; in a sweep a failed job returns None
    return run_job(cfg, train_and_report)


_main = hydra_command("train", task)


def main(argv: list[str] | None = None) -> int:
    return _main(with_recipe(sys.argv[1:] if argv is None else list(argv)))


if __name__ == "__main__":
    sys.exit(main())
