"""Evaluate a checkpoint and write the report:
``python -m retina.eval ckpt_path=FILE [data=...] [out=DIR]`` (see conf/eval.yaml)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from retina.analysis.report import report_from_checkpoint


@hydra.main(version_base="1.3", config_path="../../conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    report_from_checkpoint(cfg.ckpt_path, cfg.out, cfg.get("data"), cfg.accelerator, **cfg.report)


if __name__ == "__main__":
    main()
