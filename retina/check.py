"""The dataset doctor: ``retina check [data=...] [key=value ...]`` (``python -m retina.check``;
see conf/check.yaml): counts, box sizes against the anchors, the recall ceiling and what lifts
it (:mod:`retina.training.check`). Without ``experiment=``, the recipe follows the data as in
``retina train``."""

from __future__ import annotations

import sys

from omegaconf import DictConfig

from retina.cli import hydra_command
from retina.conf import with_recipe
from retina.training.check import run_check


def task(cfg: DictConfig) -> None:
    run_check(cfg)


_main = hydra_command("check", task)


def main(argv: list[str] | None = None) -> int:
    return _main(with_recipe(sys.argv[1:] if argv is None else list(argv)))


if __name__ == "__main__":
    sys.exit(main())
