"""Moved to :mod:`retina.data.to_coco`; this old path warns, and goes in retina 0.3."""

import sys

from retina.compat import moved, run_moved

__getattr__ = moved(__name__, "retina.data.to_coco")

if __name__ == "__main__":
    sys.exit(run_moved("retina.data.convert", "retina.data.to_coco"))
