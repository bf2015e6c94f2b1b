"""Evaluate a checkpoint and write the report: ``retina eval model=FILE [data=...] [out=DIR]``
(``python -m retina.eval``; options: :class:`retina.options.EvalOptions`)."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

from retina.cli import key_value_command, lightning_device
from retina.eval.settings import compose_evaluation
from retina.options import EvalOptions


def task(opts: EvalOptions, prefixed: list[str]) -> None:
    data, report = compose_evaluation(opts.data, prefixed, f"retina eval model={opts.model} ...")
    from retina.analysis.report import report_from_checkpoint  # after the checks: torch
    out = opts.out or Path("outputs", "eval", datetime.now().strftime("%Y-%m-%d_%H-%M-%S"))
    accelerator, devices = lightning_device(opts.device)
    report_from_checkpoint(opts.model, out, data, accelerator, devices=devices,
                           max_det=opts.max_det, **report)


main = key_value_command("eval", task)

if __name__ == "__main__":
    sys.exit(main())
