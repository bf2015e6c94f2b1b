"""``retina export model=FILE format=... [out=PATH]`` (``python -m retina.export``; options:
:class:`retina.options.ExportOptions`)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from retina.cli import key_value_command
from retina.export.formats import SUFFIXES, export
from retina.infer.predictor import from_checkpoint
from retina.options import ExportOptions

log = logging.getLogger(__name__)


def run_export(opts: ExportOptions) -> Path:
    """Export ``opts.model`` in ``opts.format``; returns the written file."""
    predictor = from_checkpoint(opts.model)
    predictor.set_postprocess(score_thresh=opts.conf, nms_thresh=opts.iou, max_det=opts.max_det)
    out = opts.out or Path(opts.model).with_suffix(SUFFIXES[opts.format])
    input_size = tuple(opts.input_size) if opts.input_size else None
    path = export(predictor, opts.format, out, input_size, opts.opset)
    log.info("wrote %s", path)
    print(path)
    return path


main = key_value_command("export", run_export)

if __name__ == "__main__":
    sys.exit(main())
