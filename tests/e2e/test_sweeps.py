"""Real sweeps (``python -m retina.train -m``): grids, failed trials, Optuna studies."""

import csv
import json
import subprocess
import sys

import matplotlib.image
import pytest

from retina.training.config import ROOT
from tests.helpers import TINY


def sweep(tmp_path, *overrides):
    """``python -m retina.train -m`` on tiny NEON settings (fast_dev_run) into tmp_path/sweep."""
    run = subprocess.run(
        [sys.executable, "-m", "retina.train", "-m", *TINY, "debug=fdr", *overrides,
         f"paths.log_dir={tmp_path}", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    with open(tmp_path / "sweep" / "sweep.csv", newline="") as f:
        return list(csv.DictReader(f))


def job_metrics(tmp_path, row: dict) -> dict:
    """The metrics.json that the sweep's job wrote itself."""
    return json.loads((tmp_path / "sweep" / row["job"] / "metrics.json").read_text())


@pytest.mark.slow
def test_grid_sweep_writes_summary_and_sweep_report_reproduces_it(tmp_path):
    rows = sweep(tmp_path, "experiment=neon_retinanet", "loss.gamma=0,2", "loss.alpha=0.25,0.75")
    assert [(r["job"], r["loss.gamma"], r["loss.alpha"], r["status"]) for r in rows] == [
        ("0", "0", "0.25", "ok"), ("1", "0", "0.75", "ok"), ("2", "2", "0.25", "ok"), ("3", "2", "0.75", "ok")]
    for r in rows:  # fast_dev_run validates one batch: real COCO numbers
        assert 0 <= float(r["val/mAP"]) <= float(r["val/mAP_50"]) <= 1 and float(r["wall_s"]) > 0
        assert float(r["val/mAP"]) == job_metrics(tmp_path, r)["val/mAP"]
    md = (tmp_path / "sweep" / "sweep.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| ") and "rank" not in line]
    maps = [float(line.split(" | ")[4]) for line in table]
    assert len(table) == 4 and maps == sorted(maps, reverse=True)
    assert matplotlib.image.imread(tmp_path / "sweep" / "sweep.png").shape[0] > 200

    written = (tmp_path / "sweep" / "sweep.csv").read_text()
    (tmp_path / "sweep" / "sweep.csv").unlink()
    report = subprocess.run([sys.executable, "-m", "retina.sweeps.report", str(tmp_path / "sweep")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    assert (tmp_path / "sweep" / "sweep.csv").read_text() == written
    assert (tmp_path / "sweep" / "sweep.md").read_text() == md


@pytest.mark.slow
def test_a_failed_trial_and_one_cut_short_are_recorded_and_the_sweep_goes_on(tmp_path):
    # bg_iou 0.6: a value the key allows on its own (a bad gamma is refused before the sweep
    # starts) that fails when its trial builds the assigner (above fg_iou, 0.5); bg_iou 0.4:
    # 30 planned epochs of one step, cut by max_steps=2, still validates its final weights
    rows = sweep(tmp_path, "experiment=neon_retinanet", "loss.assigner.bg_iou=0.6,0.4",
                 "trainer.max_epochs=30", "trainer.max_steps=2")
    failed, ok = rows
    assert failed["status"] == "failed" and failed["loss.assigner.bg_iou"] == "0.6"
    assert failed["error"] == "ValueError: bg_iou (0.6) must not exceed fg_iou (0.5)"
    assert failed["val/mAP"] == ""
    metrics = job_metrics(tmp_path, ok)
    assert ok["status"] == "ok" and ok["stopped_early"] == "True"
    assert metrics["stopped_early"] is True and metrics["global_step"] == 2
    assert float(ok["val/mAP"]) == metrics["val/mAP"]
    md = (tmp_path / "sweep" / "sweep.md").read_text()
    assert md.count(" of 30, stopped early | ") == 1 and "1 failed" in md
    assert md.splitlines()[-1].startswith("| - | 0 | 0.6 |")
    assert "failed | ValueError: bg_iou" in md.splitlines()[-1]


@pytest.mark.slow
def test_focal_optuna_study_samples_floats_and_goes_on_after_a_failed_trial(tmp_path):
    # gamma sampled in [0, 5]; alpha 1.5 is invalid: TPE with seed 0 tries 0.5 first, then 1.5
    rows = sweep(tmp_path, "hparams_search=focal_optuna", "hydra.sweeper.n_trials=2",
                 "loss.alpha=choice(0.5,1.5)")
    assert [(r["loss.alpha"], r["status"]) for r in rows] == [("0.5", "ok"), ("1.5", "failed")]
    assert rows[1]["error"] == "ValueError: loss.alpha must be in [0, 1] (or negative: off), got 1.5"
    for r in rows:
        assert 0 <= float(r["loss.gamma"]) <= 5 and "." in r["loss.gamma"]  # floats, not integers
    assert float(rows[0]["val/mAP"]) == job_metrics(tmp_path, rows[0])["val/mAP"]
    best = (tmp_path / "sweep" / "optimization_results.yaml").read_text()
    assert f"best_value: {float(rows[0]['val/mAP'])}" in best and "loss.alpha: 0.5" in best
