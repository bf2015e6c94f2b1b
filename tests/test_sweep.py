"""Sweeps: per-job records, the sweep summary (csv, markdown, figure), Optuna and SLURM configs."""

import csv
import json
import math
import subprocess
import sys

import matplotlib.image
import numpy as np
import pytest
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from retina.sweeps.job import direction, run_job
from retina.sweeps.plot import figure_kind, grid_values, plot_sweep
from retina.sweeps.report import collect, ranked, summarize, swept, to_markdown, write_csv
from retina.training.config import ROOT, compose_run


def record(job, gamma, alpha, mAP=None, status="ok", error="", wall_s=10.0):
    """A job.json as retina.sweeps.job writes it; mAP None: no metrics."""
    return {
        "job": job,
        "overrides": ["experiment=neon_retinanet", f"loss.gamma={gamma}", f"loss.alpha={alpha}"],
        "status": status, "error": error, "wall_s": wall_s, "metric": "val/mAP",
        "direction": "maximize",
        "metrics": {} if mAP is None else {"val/mAP": mAP, "val/mAP_50": 2 * mAP, "epoch": 3},
    }


RECORDS = [
    record(0, 0, 0.25, 0.10),
    record(1, 0, 0.75, 0.30),
    record(2, 2, 0.25, status="failed", error="ValueError: loss diverged | nan", wall_s=1.5),
    record(3, 2, 0.75, 0.20),
]


# ---------------------------------------------------------------- report on hand-made records


def test_ranked_best_first_failed_last():
    assert [r["job"] for r in ranked(RECORDS, "val/mAP")] == [1, 3, 0, 2]
    assert [r["job"] for r in ranked(RECORDS, "val/mAP", maximize=False)] == [0, 3, 1, 2]
    # an ok job whose metric is NaN (diverged without raising) ranks with the failed ones
    nan = record(4, 5, 0.5, float("nan"))
    assert [r["job"] for r in ranked([nan, *RECORDS], "val/mAP")] == [1, 3, 0, 4, 2]


def test_swept_and_fixed_overrides():
    params, fixed = swept(RECORDS)
    assert params == {"loss.gamma": ["0", "0", "2", "2"], "loss.alpha": ["0.25", "0.75", "0.25", "0.75"]}
    assert fixed == {"experiment": "neon_retinanet"}


def test_csv_has_one_row_per_job_with_every_metric(tmp_path):
    with open(write_csv(RECORDS, tmp_path / "sweep.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["job"] for r in rows] == ["0", "1", "2", "3"]
    assert list(rows[0]) == [
        "job", "status", "overrides", "experiment", "loss.gamma", "loss.alpha",
        "epoch", "val/mAP", "val/mAP_50", "wall_s", "error",
    ]
    assert rows[1]["overrides"] == "experiment=neon_retinanet loss.gamma=0 loss.alpha=0.75"
    assert (rows[1]["loss.gamma"], rows[1]["loss.alpha"]) == ("0", "0.75")
    assert float(rows[1]["val/mAP"]) == 0.30 and float(rows[1]["val/mAP_50"]) == 0.60
    assert rows[2]["status"] == "failed" and rows[2]["val/mAP"] == ""
    assert rows[2]["error"] == "ValueError: loss diverged | nan" and rows[2]["wall_s"] == "1.5"


def test_markdown_table_sorted_with_failed_last():
    md = to_markdown(RECORDS, "val/mAP", title="grid")
    lines = md.splitlines()
    assert lines[0] == "# Sweep grid"
    assert "4 jobs: 3 ok, 1 failed" in md and "All jobs: `experiment=neon_retinanet`" in md
    table = [line for line in lines if line.startswith("| ")]
    assert table[0] == ("| rank | job | loss.gamma | loss.alpha | val/mAP | val/mAP_50 | epoch | wall_s"
                        " | status | error |")
    assert table[1] == "| 1 | 1 | 0 | 0.75 | 0.3000 | 0.6000 | 3 | 10.0 | ok |  |"
    assert [row.split(" | ")[1] for row in table[1:]] == ["1", "3", "0", "2"]
    assert table[-1] == "| - | 2 | 2 | 0.25 |  |  |  | 1.5 | failed | ValueError: loss diverged \\| nan |"


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


def test_summary_reads_old_runs_without_job_json(tmp_path):
    for job, (gamma, mAP) in enumerate([(0, 0.4), (2, None)]):
        (tmp_path / str(job) / ".hydra").mkdir(parents=True)
        (tmp_path / str(job) / ".hydra" / "overrides.yaml").write_text(f"- loss.gamma={gamma}\n")
        if mAP is not None:
            (tmp_path / str(job) / "metrics.json").write_text(json.dumps({"val/mAP": mAP}))
    (tmp_path / ".submitit").mkdir()  # not a job
    records = collect(tmp_path)
    assert [(r["job"], r["status"], r["metrics"]) for r in records] == [
        (0, "ok", {"val/mAP": 0.4}), (1, "failed", {})]
    files = summarize(tmp_path)
    assert "| 1 | 0 | 0 | 0.4000 |" in files["md"].read_text()


def test_summary_of_a_directory_without_jobs_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no job directories"):
        summarize(tmp_path)
    with pytest.raises(FileNotFoundError, match="nope: no such multirun directory"):
        summarize(tmp_path / "nope")


def test_direction_names():
    assert direction(None) == "maximize" and direction("minimize") == "minimize"
    assert direction(["minimize", "maximize"]) == "minimize"


# ---------------------------------------------------------------- one job's record


def _job_cfg(tmp_path, mode: RunMode):
    cfg = compose_run(["seed=1"], tmp_path / "run")
    OmegaConf.set_readonly(cfg.hydra, False)  # HydraConfig.set_config froze it
    with open_dict(cfg):
        cfg.hydra.mode = mode
        cfg.hydra.job.num = 7
        cfg.hydra.overrides.task = ["seed=1"]
    HydraConfig.instance().set_config(cfg)
    return cfg


def test_run_job_records_success_and_returns_the_metric(tmp_path):
    cfg = _job_cfg(tmp_path, RunMode.MULTIRUN)
    assert run_job(cfg, lambda c: {"val/mAP": 0.25, "epoch": 2}) == 0.25
    job = json.loads((tmp_path / "run" / "job.json").read_text())
    assert job["job"] == 7 and job["overrides"] == ["seed=1"] and job["status"] == "ok"
    assert job["metrics"] == {"val/mAP": 0.25, "epoch": 2} and job["wall_s"] >= 0


def test_failed_job_in_a_sweep_is_recorded_and_returns_none(tmp_path):
    cfg = _job_cfg(tmp_path, RunMode.MULTIRUN)

    def diverge(cfg):
        raise RuntimeError("loss is nan at step 3")

    assert run_job(cfg, diverge) is None
    job = json.loads((tmp_path / "run" / "job.json").read_text())
    assert job["status"] == "failed" and job["error"] == "RuntimeError: loss is nan at step 3"
    # a run that ends without a finite optimized metric is failed too (Optuna cannot use it)
    assert run_job(cfg, lambda c: {"val/mAP": math.nan}) is None
    job = json.loads((tmp_path / "run" / "job.json").read_text())
    assert job["status"] == "failed" and "val/mAP is nan" in job["error"]


def test_failed_single_run_raises(tmp_path):
    cfg = _job_cfg(tmp_path, RunMode.RUN)

    def crash(cfg):
        raise ValueError("bad")

    with pytest.raises(ValueError, match="bad"):
        run_job(cfg, crash)
    assert json.loads((tmp_path / "run" / "job.json").read_text())["status"] == "failed"


# ---------------------------------------------------------------- configs


def test_focal_optuna_searches_continuous_gamma_and_alpha(tmp_path):
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides
    from optuna.distributions import UniformDistribution

    cfg = compose_run(["hparams_search=focal_optuna"], tmp_path / "run")
    assert cfg.loss._target_ == "retina.losses.retinanet.RetinaNetCriterion"  # experiment=neon_retinanet
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper") and cfg.hydra.mode == RunMode.MULTIRUN
    assert cfg.hydra.sweeper.direction == "maximize" and cfg.optimized_metric == "val/mAP"
    space, _ = create_params_from_overrides([f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()])
    assert space == {"loss.gamma": UniformDistribution(0.0, 5.0), "loss.alpha": UniformDistribution(0.1, 0.9)}

    cfg = compose_run(["hparams_search=gfl_optuna"], tmp_path / "run")
    assert cfg.loss._target_ == "retina.losses.gfl.GFLCriterion"
    assert set(cfg.hydra.sweeper.params) == {"loss.beta", "loss.dfl_weight", "loss.giou_weight"}
    for key in cfg.hydra.sweeper.params:  # each a real key of the GFL loss
        assert key.split(".")[1] in cfg.loss


def test_slurm_launcher_runs_ddp_with_one_task_per_gpu(tmp_path):
    cfg = compose_run(
        ["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"], tmp_path / "run")
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.gpus_per_node, launcher.tasks_per_node, launcher.nodes) == (4, 4, 2)
    assert cfg.trainer.strategy == "ddp"
    assert type(instantiate(launcher)).__name__ == "SlurmLauncher"


# ---------------------------------------------------------------- real sweeps in a subprocess


def sweep(tmp_path, *overrides):
    """``python -m retina.train -m`` on tiny NEON settings (fast_dev_run) into tmp_path/sweep."""
    from conftest import TINY

    run = subprocess.run(
        [sys.executable, "-m", "retina.train", "-m", *TINY, "debug=fdr", *overrides,
         f"paths.log_dir={tmp_path}", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    with open(tmp_path / "sweep" / "sweep.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_grid_sweep_writes_summary_and_sweep_report_reproduces_it(tmp_path):
    rows = sweep(tmp_path, "experiment=neon_retinanet", "loss.gamma=0,2", "loss.alpha=0.25,0.75")
    assert [(r["job"], r["loss.gamma"], r["loss.alpha"], r["status"]) for r in rows] == [
        ("0", "0", "0.25", "ok"), ("1", "0", "0.75", "ok"), ("2", "2", "0.25", "ok"), ("3", "2", "0.75", "ok")]
    for r in rows:  # fast_dev_run validates one batch: real COCO numbers
        assert 0 <= float(r["val/mAP"]) <= float(r["val/mAP_50"]) <= 1 and float(r["wall_s"]) > 0
        metrics = json.loads((tmp_path / "sweep" / r["job"] / "metrics.json").read_text())
        assert float(r["val/mAP"]) == metrics["val/mAP"]
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
def test_failed_trial_is_recorded_and_the_sweep_goes_on(tmp_path):
    rows = sweep(tmp_path, "experiment=neon_retinanet", "loss.gamma=-1,2")
    failed, ok = rows
    assert failed["status"] == "failed" and failed["loss.gamma"] == "-1"
    assert failed["error"] == "ValueError: loss.gamma must be a number >= 0, got -1"
    assert failed["val/mAP"] == ""
    assert ok["status"] == "ok" and float(ok["val/mAP"]) >= 0
    md = (tmp_path / "sweep" / "sweep.md").read_text().splitlines()
    assert md[-1].startswith("| - | 0 | -1 |") and "failed | ValueError: loss.gamma" in md[-1]


@pytest.mark.slow
def test_focal_optuna_study_runs_its_trials(tmp_path):
    rows = sweep(tmp_path, "hparams_search=focal_optuna", "hydra.sweeper.n_trials=2")
    assert len(rows) == 2 and all(r["status"] == "ok" for r in rows)
    for r in rows:
        assert 0 <= float(r["loss.gamma"]) <= 5 and 0.1 <= float(r["loss.alpha"]) <= 0.9
        assert "." in r["loss.gamma"]  # sampled as floats, not integers
        assert float(r["val/mAP"]) >= 0
    best = (tmp_path / "sweep" / "optimization_results.yaml").read_text()
    assert f"best_value: {max(float(r['val/mAP']) for r in rows)}" in best


@pytest.mark.slow
def test_failed_optuna_trial_does_not_stop_the_study(tmp_path):
    # alpha 1.5 is invalid; TPE with seed 0 tries 0.5 first, then 1.5
    rows = sweep(tmp_path, "hparams_search=focal_optuna", "hydra.sweeper.n_trials=2", "loss.alpha=choice(0.5,1.5)")
    assert [(r["loss.alpha"], r["status"]) for r in rows] == [("0.5", "ok"), ("1.5", "failed")]
    assert rows[1]["error"] == "ValueError: loss.alpha must be in [0, 1] (or negative: off), got 1.5"
    best = (tmp_path / "sweep" / "optimization_results.yaml").read_text()
    assert f"best_value: {float(rows[0]['val/mAP'])}" in best and "loss.alpha: 0.5" in best
