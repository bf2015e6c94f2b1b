"""The dataset doctor: ``retina check [data=...] [key=value ...]`` (``python -m retina.check``;
see conf/check.yaml): counts, box sizes against the anchors, the recall ceiling and what lifts
it (:mod:`retina.training.check`). Without ``experiment=``, the recipe follows the data as in
``retina train``."""

from __future__ import annotations

import sys

from omegaconf import DictConfig

from retina.cli import hydra_command
from retina.training.check import run_check


def task(cfg: DictConfig) -> None:
    run_check(cfg)


main = hydra_command("check", task)  # the recipe follows the data (retina.conf.with_recipe)


if __name__ == "__main__":
    sys.exit(main())
