"""``retina sweep-report DIR metric= minimize=``: the ranking, the table and the figure follow
the options (jobs of tests/helpers.py's RECORDS: val/mAP 0.10, 0.30, failed, 0.20 and
val/mAP_50 twice that)."""

import json

import numpy as np
import pytest

from retina.sweeps.report import main as sweep_report
from tests.figures import saved_figures
from tests.helpers import RECORDS


@pytest.fixture
def sweep_dir(tmp_path):
    for r in RECORDS:
        (tmp_path / str(r["job"])).mkdir()
        (tmp_path / str(r["job"]) / "job.json").write_text(json.dumps(r))
    return tmp_path


def ranking(md: str) -> list[tuple[str, str]]:
    """(rank, job) of each table row."""
    rows = [line.split(" | ") for line in md.splitlines() if line.startswith("| ")][1:]
    return [(r[0].lstrip("| "), r[1]) for r in rows]


@pytest.mark.parametrize("options,sorted_by,order,metric", [
    # the jobs' own: val/mAP, maximize -> 0.30 (job 1), 0.20 (3), 0.10 (0), failed (2)
    ([], "`val/mAP` (maximize)", ["1", "3", "0", "2"], "val/mAP"),
    # val/mAP_50 minimized -> 0.20 (job 0), 0.40 (3), 0.60 (1), failed last
    (["metric=val/mAP_50", "minimize=true"], "`val/mAP_50` (minimize)", ["0", "3", "1", "2"],
     "val/mAP_50"),
    (["minimize=true"], "`val/mAP` (minimize)", ["0", "3", "1", "2"], "val/mAP"),
    (["metric=val/mAP_50"], "`val/mAP_50` (maximize)", ["1", "3", "0", "2"], "val/mAP_50"),
], ids=["defaults", "metric_minimize", "minimize", "metric"])
def test_sweep_report_ranks_and_plots_by_the_options(sweep_dir, capsys, options, sorted_by, order,
                                                     metric):
    with saved_figures() as figures:
        assert sweep_report([str(sweep_dir), *options]) == 0
    md = (sweep_dir / "sweep.md").read_text()
    printed = capsys.readouterr().out
    assert md in printed and str(sweep_dir / "sweep.png") in printed
    assert f"Sorted by {sorted_by}, best first." in md
    assert ranking(md) == [("1", order[0]), ("2", order[1]), ("3", order[2]), ("-", order[3])]
    header = [line for line in md.splitlines() if line.startswith("| rank")][0].split(" | ")
    assert header[4] == metric  # the ranked metric is the first metric column
    # the figure: val of each (gamma, alpha) cell, gamma 0 and 2 across, alpha .25 and .75 up;
    # the failed job (gamma 2, alpha .25) is masked
    ax = figures["sweep.png"].axes[0]
    scale = 2 if metric == "val/mAP_50" else 1
    grid = np.ma.filled(ax.images[0].get_array().astype(float), np.nan)
    np.testing.assert_allclose(grid, scale * np.array([[0.10, np.nan], [0.30, 0.20]]))
    assert ax.get_title() == f"{metric} over loss.gamma x loss.alpha"
