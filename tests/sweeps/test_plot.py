"""retina.sweeps.plot: the sweep figure (heatmap, line, bars, scatter)."""

import matplotlib.image
import numpy as np
import pytest

from retina.sweeps.plot import figure_kind, grid_values, plot_sweep
from retina.sweeps.report import swept
from tests.helpers import RECORDS


def test_grid_values_put_each_job_in_its_cell():
    params, _ = swept(RECORDS)
    xs, ys, grid, tried = grid_values(params, [0.10, 0.30, None, 0.20])
    assert (xs, ys) == (["0", "2"], ["0.25", "0.75"])
    # rows alpha, columns gamma; (gamma=2, alpha=0.25) failed
    np.testing.assert_array_equal(grid, [[0.10, np.nan], [0.30, 0.20]])
    assert tried.all()
    # numeric values sort as numbers, not strings; a missing combination is not "tried"
    xs, ys, grid, tried = grid_values({"a": ["10", "9", "10"], "b": ["x", "x", "y"]}, [1.0, 2.0, 3.0])
    assert xs == ["9", "10"] and ys == ["x", "y"]
    np.testing.assert_array_equal(tried, [[True, True], [False, True]])


def test_figure_kind_follows_the_sweep_shape():
    assert figure_kind({"g": ["0", "0", "2", "2"], "a": ["1", "3", "1", "3"]}) == "heatmap"
    assert figure_kind({"g": ["0", "1", "2"]}) == "line"
    assert figure_kind({"loss": ["focal", "ohem"]}) == "bars"
    # Optuna: continuous samples of two parameters are not a grid
    assert figure_kind({"g": ["0.1", "4.2", "2.5"], "a": ["0.3", "0.8", "0.5"]}) == "scatter"
    assert figure_kind({"g": ["0", "1"], "a": ["1", "2"], "b": ["1", "2"]}) == "bars"


@pytest.mark.parametrize("params", [
    {"loss.gamma": ["0", "0", "2", "2"], "loss.alpha": ["0.25", "0.75", "0.25", "0.75"]},
    {"loss.gamma": ["0", "1", "2", "2"]},
    {"loss": ["focal", "ohem", "gfl", "x"]},
    {"loss.gamma": ["0.1", "4.2", "2.5", "1"], "loss.alpha": ["0.3", "0.8", "0.5", "0.1"]},
])
def test_plot_sweep_writes_a_figure_with_failed_jobs(tmp_path, params):
    out = plot_sweep(params, [0.1, float("nan"), None, 0.2], "val/mAP", tmp_path / "s.png")
    image = matplotlib.image.imread(out)
    assert image.shape[0] > 200 and image.shape[1] > 300
    assert image[..., :3].std() > 0.05  # not blank
