"""retina.sweeps.job: one job's record, success or failure."""

import json
import math

import pytest
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf, open_dict

from retina.sweeps.job import direction, run_job
from retina.training.config import compose_run


def test_direction_names():
    assert direction(None) == "maximize" and direction("minimize") == "minimize"
    assert direction(["minimize", "maximize"]) == "minimize"


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
