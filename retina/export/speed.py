"""Moved to :mod:`retina.infer.speed`; this old path warns, and goes in retina 0.3."""

import sys

from retina.compat import moved, run_moved

__getattr__ = moved(__name__, "retina.infer.speed")

if __name__ == "__main__":
    sys.exit(run_moved("retina.export.speed", "retina.infer.speed"))
