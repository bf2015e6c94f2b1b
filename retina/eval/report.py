"""The report of a results file, no model:
``python -m retina.eval.report ann=val.json results=results.json out=DIR [images=DIR]``
(see conf/eval_report.yaml). A bad file is one line naming it (and the entry), exit code 2."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from retina.analysis.report import report_from_files


@hydra.main(version_base="1.3", config_path="../../conf", config_name="eval_report")
def main(cfg: DictConfig) -> None:
    try:
        report_from_files(cfg.ann, cfg.results, cfg.out, cfg.images, **cfg.report)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
