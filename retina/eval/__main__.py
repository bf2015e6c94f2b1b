"""Evaluate a checkpoint and write the report: ``retina eval ckpt_path=FILE [data=...]
[out=DIR]`` (``python -m retina.eval``; see conf/eval.yaml)."""

from __future__ import annotations

import sys

from omegaconf import DictConfig

from retina.analysis.report import report_from_checkpoint
from retina.cli import hydra_command


def task(cfg: DictConfig) -> None:
    report_from_checkpoint(cfg.ckpt_path, cfg.out, cfg.get("data"), cfg.accelerator, **cfg.report)


main = hydra_command("eval", task)

if __name__ == "__main__":
    sys.exit(main())
