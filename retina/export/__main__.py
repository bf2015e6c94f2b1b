"""``retina export ckpt_path=FILE format=... [out=PATH]`` (``python -m retina.export``; see
conf/export.yaml)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from omegaconf import DictConfig

from retina.cli import hydra_command
from retina.export.formats import SUFFIXES, export
from retina.infer.predictor import from_checkpoint

log = logging.getLogger(__name__)

POSTPROCESS_KEYS = ("score_thresh", "nms_thresh", "max_det")


def run_export(cfg: DictConfig) -> Path:
    """Export ``cfg.ckpt_path`` in ``cfg.format``; returns the written file."""
    if cfg.format not in SUFFIXES:
        raise ValueError(f"format must be one of {', '.join(SUFFIXES)}, got {cfg.format!r}")
    predictor = from_checkpoint(cfg.ckpt_path)
    predictor.set_postprocess(**{k: cfg.get(k) for k in POSTPROCESS_KEYS})
    out = cfg.out or Path(cfg.ckpt_path).with_suffix(SUFFIXES[cfg.format])
    input_size = tuple(cfg.input_size) if cfg.get("input_size") else None
    path = export(predictor, cfg.format, out, input_size, cfg.opset)
    log.info("wrote %s", path)
    print(path)
    return path


main = hydra_command("export", run_export)

if __name__ == "__main__":
    sys.exit(main())
