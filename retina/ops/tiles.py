"""Moved to :mod:`retina.ops.window_merge`; this old path warns, and goes in retina 0.3."""

from retina.compat import moved

__getattr__ = moved(__name__, "retina.ops.window_merge")
