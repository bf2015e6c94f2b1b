"""The report of a results file, no model: ``retina report ann=val.json results=results.json
out=DIR [images=DIR]`` (``python -m retina.eval.report``; options:
:class:`retina.options.ReportOptions`). A bad file is one line naming it (and the entry),
exit code 2."""

from __future__ import annotations

import sys

from retina.cli import key_value_command
from retina.eval.settings import compose_evaluation
from retina.options import ReportOptions


def task(opts: ReportOptions, prefixed: list[str]) -> None:
    _, report = compose_evaluation(None, prefixed, "retina report ann=val.json ...")
    from retina.analysis.report import report_from_files  # after the checks: torch
    report_from_files(opts.ann, opts.results, opts.out, opts.images, **report)


main = key_value_command("report", task)

if __name__ == "__main__":
    sys.exit(main())
