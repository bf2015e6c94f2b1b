"""The report of a results file, no model: ``retina report ann=val.json results=results.json
out=DIR [images=DIR]`` (``python -m retina.eval.report``; see conf/eval_report.yaml). A bad file
is one line naming it (and the entry), exit code 2."""

from __future__ import annotations

import sys

from omegaconf import DictConfig

from retina.analysis.report import report_from_files
from retina.cli import USAGE_ERROR, hydra_command


def task(cfg: DictConfig) -> None:
    try:
        report_from_files(cfg.ann, cfg.results, cfg.out, cfg.images, **cfg.report)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(USAGE_ERROR)


main = hydra_command("report", task)

if __name__ == "__main__":
    sys.exit(main())
