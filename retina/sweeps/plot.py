"""The sweep figure: the optimized metric against the swept parameters.

Two parameters on a full grid: a heatmap with the values in the cells. One numeric parameter:
a line. One categorical parameter (``loss=focal,ohem``): bars. Anything else (Optuna's
continuous samples, three or more parameters): a scatter of two numeric parameters coloured by
the metric, or bars per job. Failed jobs are shown as ``failed``, never as a value.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure  # off-screen: no pyplot, no global backend


def as_number(text: str) -> float | None:
    """``"0.5"`` -> 0.5; anything that is not a finite number (``focal``, ``null``) -> None."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def axis_values(values: list[str]) -> list[str]:
    """The distinct values of a parameter: numerically sorted if all are numbers, else in order
    of first appearance."""
    distinct = list(dict.fromkeys(values))
    if all(as_number(v) is not None for v in distinct):
        distinct.sort(key=as_number)
    return distinct


def is_full_grid(params: dict[str, list[str]]) -> bool:
    """Two parameters whose jobs cover every combination of their values once or more."""
    if len(params) != 2:
        return False
    xs, ys = params.values()
    return len(set(zip(xs, ys))) == len(set(xs)) * len(set(ys))


def figure_kind(params: dict[str, list[str]]) -> str:
    """``heatmap`` (two parameters on a full grid), ``line`` (one numeric parameter),
    ``scatter`` (two numeric parameters, not a grid: Optuna) or ``bars`` (anything else)."""
    numeric = all(as_number(v) is not None for vs in params.values() for v in vs)
    if is_full_grid(params):
        return "heatmap"
    if len(params) == 1 and numeric:
        return "line"
    if len(params) == 2 and numeric:
        return "scatter"
    return "bars"


def label(value: float) -> str:
    """A metric value written on the figure: 3 decimals, or 2 significant digits below 0.01."""
    return f"{value:.3f}" if value == 0 or abs(value) >= 0.01 else f"{value:.2g}"


def short(text: str) -> str:
    """A parameter value for a label: numbers with 4 significant digits."""
    number = as_number(text)
    return text if number is None or text == f"{number:g}" else f"{number:.4g}"


def plot_sweep(
    params: dict[str, list[str]], values: list[float | None], metric: str, out: str | Path
) -> Path:
    """Draw the sweep and save it as a PNG.

    Args:
        params: swept parameter -> its value in each job (override strings), e.g.
            ``{"loss.gamma": ["0", "0", "2", "2"], "loss.alpha": ["0.25", "0.75", "0.25", "0.75"]}``.
        values: the metric of each job (same order), None for a failed job.
        metric: the metric's name, for the labels.
        out: the PNG path.
    """
    values = [v if v is not None and math.isfinite(v) else None for v in values]
    draw = {"heatmap": _heatmap, "line": _line, "scatter": _scatter, "bars": _bars}
    fig = draw[figure_kind(params)](params, values, metric)
    out = Path(out)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    return out


def grid_values(
    params: dict[str, list[str]], values: list[float | None]
) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """The metric on the grid of two parameters.

    Returns:
        x values, y values (as in :func:`axis_values`), the grid ``(Y, X)`` with NaN where no
        job has a value (failed or not run; repeated cells keep the highest value) and a bool
        ``(Y, X)`` that is True where some job ran.
    """
    (_, xs), (_, ys) = params.items()
    x_axis, y_axis = axis_values(xs), axis_values(ys)
    grid = np.full((len(y_axis), len(x_axis)), np.nan)  # (Y, X)
    tried = np.zeros_like(grid, dtype=bool)  # (Y, X)
    for x, y, v in zip(xs, ys, values):
        i, j = y_axis.index(y), x_axis.index(x)
        tried[i, j] = True
        if v is not None:
            grid[i, j] = v if np.isnan(grid[i, j]) else max(grid[i, j], v)
    return x_axis, y_axis, grid, tried


def _heatmap(params: dict[str, list[str]], values: list[float | None], metric: str):
    x_key, y_key = params
    x_axis, y_axis, grid, tried = grid_values(params, values)
    fig = Figure(figsize=(1.2 * len(x_axis) + 2.5, 0.8 * len(y_axis) + 1.8))
    ax = fig.subplots()
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="lightgrey")  # failed cells
    image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, origin="lower", aspect="auto")
    fig.colorbar(image, ax=ax, label=metric)
    finite = grid[np.isfinite(grid)]
    middle = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    for i in range(len(y_axis)):
        for j in range(len(x_axis)):
            v = grid[i, j]
            text = label(v) if np.isfinite(v) else ("failed" if tried[i, j] else "")
            color = "black" if not np.isfinite(v) or v > middle else "white"
            ax.text(j, i, text, ha="center", va="center", color=color, fontsize=9)
    ax.set_xticks(range(len(x_axis)), [short(v) for v in x_axis])
    ax.set_yticks(range(len(y_axis)), [short(v) for v in y_axis])
    ax.set(xlabel=x_key, ylabel=y_key, title=f"{metric} over {x_key} x {y_key}")
    return fig


def _line(params: dict[str, list[str]], values: list[float | None], metric: str):
    ((key, xs),) = params.items()
    points = sorted(((as_number(x), v) for x, v in zip(xs, values)), key=lambda p: p[0])
    fig = Figure(figsize=(5, 3.6))
    ax = fig.subplots()
    ok = [(x, v) for x, v in points if v is not None]
    if ok:
        ax.plot(*zip(*ok), marker="o")
        for x, v in ok:
            ax.annotate(label(v), (x, v), textcoords="offset points", xytext=(0, 6), ha="center")
    failed = [x for x, v in points if v is None]
    if failed:
        ax.plot(failed, [0.0] * len(failed), "rx", ms=9, label="failed")
        ax.legend(frameon=False)
    ax.margins(x=0.1, y=0.2)  # room for the labels
    ax.set(xlabel=key, ylabel=metric, title=f"{metric} over {key}")
    return fig


def _scatter(params: dict[str, list[str]], values: list[float | None], metric: str):
    (x_key, xs), (y_key, ys) = params.items()
    x, y = np.array([as_number(v) for v in xs]), np.array([as_number(v) for v in ys])
    ok = np.array([v is not None for v in values])
    fig = Figure(figsize=(5.5, 4))
    ax = fig.subplots()
    if ok.any():
        dots = ax.scatter(x[ok], y[ok], c=[v for v in values if v is not None], cmap="viridis", s=60)
        fig.colorbar(dots, ax=ax, label=metric)
        for xi, yi, v in zip(x[ok], y[ok], [v for v in values if v is not None]):
            ax.annotate(label(v), (xi, yi), textcoords="offset points", xytext=(0, 6), ha="center")
    if (~ok).any():
        ax.scatter(x[~ok], y[~ok], marker="x", c="red", s=60, label="failed")
        ax.legend(frameon=False)
    ax.set(xlabel=x_key, ylabel=y_key, title=f"{metric} over {x_key}, {y_key}")
    return fig


def _bars(params: dict[str, list[str]], values: list[float | None], metric: str):
    n = len(values)
    if len(params) == 1:
        ((key, labels),) = params.items()
        title = f"{metric} over {key}"
    else:  # one bar per job, named by its swept values
        labels = [" ".join(f"{k}={short(vs[i])}" for k, vs in params.items()) or f"job {i}"
                  for i in range(n)]
        title = metric
    fig = Figure(figsize=(max(4.0, 0.9 * n + 1.5), 3.8))
    ax = fig.subplots()
    heights = [v if v is not None else 0.0 for v in values]
    ax.bar(range(n), heights, color=["C0" if v is not None else "lightgrey" for v in values])
    for i, v in enumerate(values):
        ax.text(i, heights[i], label(v) if v is not None else "failed", ha="center", va="bottom")
    ax.set_xticks(range(n), labels, rotation=30 if len(params) != 1 else 0, ha="right"
                  if len(params) != 1 else "center")
    ax.set(ylabel=metric, title=title)
    return fig
