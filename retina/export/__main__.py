"""``retina export model=FILE format=... [out=PATH]`` (``python -m retina.export``; options:
:class:`retina.options.ExportOptions`)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from retina.cli import key_value_command
from retina.export.calibration import Calibration
from retina.export.formats import SUFFIXES, check_export, export
from retina.infer.predictor import from_checkpoint
from retina.options import ExportOptions

log = logging.getLogger(__name__)


def default_out(opts: ExportOptions) -> Path:
    """Next to the checkpoint, with the format's suffix, ``_int8`` / ``_fp16`` / ``_bf16``
    before it: ``best.ckpt`` -> ``best_int8.onnx``."""
    model = Path(opts.model)
    tag = "_int8" if opts.quantize else "" if opts.precision == "fp32" else f"_{opts.precision}"
    return model.with_name(model.stem + tag + SUFFIXES[opts.format])


def run_export(opts: ExportOptions) -> Path:
    """Export ``opts.model`` in ``opts.format``; returns the written file."""
    calibration = Calibration.from_folder(opts.calib, opts.calib_images) if opts.calib else None
    if calibration and not opts.quantize:
        raise ValueError("calib= is for quantize=int8: add quantize=int8, or leave calib out")
    check_export(opts.format, opts.precision, opts.quantize, calibration)  # before the model
    predictor = from_checkpoint(opts.model)
    predictor.set_postprocess(score_thresh=opts.conf, nms_thresh=opts.iou, max_det=opts.max_det)
    input_size = tuple(opts.input_size) if opts.input_size else None
    path = export(predictor, opts.format, opts.out or default_out(opts), input_size, opts.opset,
                  precision=opts.precision, quantize=opts.quantize, calibration=calibration)
    log.info("wrote %s", path)
    print(path)
    return path


main = key_value_command("export", run_export)

if __name__ == "__main__":
    sys.exit(main())
