"""Old import paths, kept working for one release with a deprecation warning.

A module that moved leaves a file behind that only names its new place::

    __getattr__ = moved(__name__, "retina.infer.predictor")

``from retina.export.predictor import Predictor`` then warns and returns the new module's
object (the same object: ``isinstance`` checks hold). Running the old module (``python -m``)
runs the new one. Removed in the release after :data:`REMOVED_IN` says.

Below every layer (any module may import it): the standard library only.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Callable
from typing import Any

REMOVED_IN = "0.3"


def moved(old: str, new: str, names: tuple[str, ...] | None = None) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``old`` that forwards to the module ``new`` with a
    ``DeprecationWarning``; with ``names``, only those attributes (others raise
    AttributeError, as a module without them would)."""

    def __getattr__(name: str) -> Any:
        if name.startswith("__") or (names is not None and name not in names):
            raise AttributeError(f"module {old!r} has no attribute {name!r}")
        module = importlib.import_module(new)
        if not hasattr(module, name):
            raise AttributeError(f"module {old!r} has no attribute {name!r}")
        warnings.warn(f"{old}.{name} moved to {new}.{name}; the old path goes in retina "
                      f"{REMOVED_IN}", DeprecationWarning, stacklevel=2)
        return getattr(module, name)

    return __getattr__


def run_moved(old: str, new: str) -> int:
    """``python -m old`` after ``old`` moved: say so, then run ``new``'s ``main``."""
    print(f"{old} moved to {new} (python -m {new}); the old name goes in retina {REMOVED_IN}",
          file=sys.stderr)
    return importlib.import_module(new).main() or 0
