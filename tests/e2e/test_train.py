"""End-to-end runs of the real composed config on real NEON tiles, shrunk: train, evaluate,
resume, and the same from the command line."""

import json
import subprocess
import sys

import pytest

from retina.training.checkpoint import load_checkpoint
from retina.training.config import ROOT
from retina.training.run import evaluate, train
from tests.helpers import TINY

SHORT = [
    "trainer.max_epochs=1", "trainer.limit_train_batches=2", "callbacks.lr_monitor=null",
    "trainer.check_val_every_n_epoch=1", "trainer.log_every_n_steps=1",
]


@pytest.mark.parametrize("experiment", [None, "neon_retinanet"])  # None: the default (GFL)
def test_fast_dev_run_writes_metrics(tiny_cfg, tmp_path, experiment):
    metrics = train(tiny_cfg("debug=fdr", *([f"experiment={experiment}"] if experiment else [])))
    assert {"val/mAP", "val/mAP_50", "val/mAP_75", "val/AR_100", "val/mAP_small"} <= set(metrics)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == metrics
    assert metrics["val/AP/Tree"] == pytest.approx(metrics["val/mAP"], abs=1e-6)  # one class


def test_resume_and_eval_reproduce_training(tiny_cfg, tmp_path):
    first = train(tiny_cfg(*SHORT))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    saved = load_checkpoint(str(ckpt))
    assert saved["global_step"] == first["global_step"] == 2
    assert saved["hyper_parameters"]["class_names"] == ["Tree"]
    assert (tmp_path / "run" / "training.png").stat().st_size > 10_000  # loss + mAP curves

    # eval on the checkpoint gives the numbers written at the end of training
    metrics = evaluate(tiny_cfg(f"ckpt_path={ckpt}", "accelerator=cpu", name="eval"))
    for key in ("val/mAP", "val/mAP_50", "val/AR_100"):
        assert metrics[key] == pytest.approx(first[key], abs=1e-9), key

    # resuming continues at the saved step and epoch, with the optimizer state
    second = train(tiny_cfg(*SHORT, "trainer.max_epochs=2", f"ckpt_path={ckpt}"))
    assert second["global_step"] == 4 and second["epoch"] == 2


@pytest.mark.slow
def test_command_line_train_then_eval(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "retina.train", *TINY, *SHORT, f"paths.log_dir={tmp_path}",
         "hydra.run.dir=" + str(tmp_path / "run")],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    # the report of best.ckpt (the one epoch) is written at the end of training
    report = json.loads((tmp_path / "run" / "report" / "metrics.json").read_text())
    assert report["mAP"] == pytest.approx(metrics["val/mAP"], abs=1e-12)
    assert (tmp_path / "run" / "report" / "errors.md").is_file()
    ev = subprocess.run(
        [sys.executable, "-m", "retina.eval", f"ckpt_path={tmp_path / 'run/checkpoints/best.ckpt'}",
         "accelerator=cpu", f"paths.log_dir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert ev.returncode == 0, ev.stderr[-3000:]
    assert "Average Precision  (AP) @[ IoU=0.50:0.95" in ev.stdout + ev.stderr
    (eval_dir,) = (tmp_path / "eval").iterdir()  # the run directory is the report's folder
    assert json.loads((eval_dir / "metrics.json").read_text())["mAP"] == pytest.approx(
        metrics["val/mAP"], abs=1e-12)
