"""Read back what a figure shows: every matplotlib ``Figure`` saved while a block runs, by the
name of the file it was saved to, so that a test checks the plotted data (line and bar
values, image arrays), not that a PNG exists."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import pytest
from matplotlib.figure import Figure


@contextmanager
def saved_figures():
    """``{file name: Figure}`` of the figures saved inside the block (saved as usual too)."""
    saved: dict[str, Figure] = {}
    savefig = Figure.savefig

    def spy(self, fname, *args, **kwargs):
        saved[Path(fname).name] = self
        return savefig(self, fname, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Figure, "savefig", spy)
        yield saved


def lines_by_label(ax) -> dict[str, tuple[list[float], list[float]]]:
    """The labelled lines of an Axes: {label: (x data, y data)}."""
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata()))
            for line in ax.get_lines() if not line.get_label().startswith("_")}
