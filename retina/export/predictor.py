"""Moved to :mod:`retina.infer.predictor`; this old path warns, and goes in retina 0.3."""

from retina.compat import moved

__getattr__ = moved(__name__, "retina.infer.predictor")
