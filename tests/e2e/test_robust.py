"""Runs that go wrong: a non-finite loss, two processes (DDP), a kill mid-epoch."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from retina.training.atomic_io import AtomicCheckpointIO
from retina.training.checkpoint import load_checkpoint
from retina.training.config import ROOT, compose_run
from retina.training.module import DetectionModule
from retina.training.nonfinite import NonFiniteLossError
from retina.training.run import train
from tests.helpers import TINY

SHORT = ["trainer.max_epochs=1", "callbacks.lr_monitor=null", "trainer.check_val_every_n_epoch=1",
         "trainer.log_every_n_steps=1"]


def poison_losses(monkeypatch, nan_calls: set[int]) -> list[dict[str, torch.Tensor]]:
    """Make ``loss_cls`` NaN on the given calls (1-based) of ``DetectionModule.losses``;
    returns the trainable weights as they were at the start of each call."""
    weights = []
    losses = DetectionModule.losses

    def poisoned(self, batch):
        weights.append({n: p.detach().clone() for n, p in self.named_parameters() if p.requires_grad})
        out = losses(self, batch)
        if len(weights) in nan_calls:
            out["loss_cls"] = out["loss_cls"] * float("nan")
        return out

    monkeypatch.setattr(DetectionModule, "losses", poisoned)
    return weights


def test_nonfinite_loss_stops_with_epoch_step_images_and_saved_batch(tiny_cfg, tmp_path, monkeypatch):
    poison_losses(monkeypatch, {1})
    with pytest.raises(NonFiniteLossError) as err:
        train(tiny_cfg("debug=fdr"))
    saved_file = tmp_path / "run" / "nonfinite" / "epoch0_step0.pt"
    msg = str(err.value)
    assert "epoch 0, global step 0" in msg and "loss_cls=nan" in msg and str(saved_file) in msg
    assert "train.skip_nonfinite=true" in msg
    saved = torch.load(saved_file)  # weights_only: plain tensors and numbers
    assert f"image ids {saved['image_ids'].tolist()}" in msg
    assert saved["images"].shape == (2, 3, 128, 128)  # data.batch_size=2, data.size=128
    assert saved["boxes"].shape[:2] == saved["labels"].shape and saved["boxes"].shape[0] == 2
    assert torch.isnan(saved["losses"]["loss_cls"]) and torch.isfinite(saved["losses"]["loss_box"])
    assert (saved["epoch"], saved["global_step"]) == (0, 0)


def test_skip_nonfinite_leaves_weights_unchanged_and_counts(tiny_cfg, tmp_path, monkeypatch, caplog):
    weights = poison_losses(monkeypatch, {2})  # the second of three steps
    written, save = [], AtomicCheckpointIO.save_checkpoint

    def spy(self, checkpoint, path, **kwargs):
        written.append(Path(path).name)
        return save(self, checkpoint, path, **kwargs)

    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", spy)
    metrics = train(tiny_cfg(*SHORT, "trainer.limit_train_batches=3", "train.skip_nonfinite=true"))
    assert len(weights) == 3 and metrics["global_step"] == 3  # Lightning counts the skipped step
    changed = [not torch.equal(weights[i][n], weights[i + 1][n]) for i in (0, 1) for n in weights[0]]
    n = len(weights[0])
    assert any(changed[:n])  # step 1 moved the weights
    assert not any(changed[n:])  # step 2 (NaN) did not
    assert "non-finite training loss (loss_cls=nan" in caplog.text and "step skipped" in caplog.text
    rows = list(csv.DictReader((tmp_path / "run/csv/version_0/metrics.csv").open()))
    skipped = [(r["step"], r["train/skipped_nonfinite"]) for r in rows if r["train/skipped_nonfinite"]]
    assert skipped == [("0", "0.0"), ("1", "1.0"), ("2", "1.0")]  # steps skipped so far
    assert not (tmp_path / "run" / "nonfinite").exists()  # skipping does not save batches
    assert sorted(written) == ["best.ckpt", "last.ckpt"]  # both through the atomic writer


# ---------------------------------------------------------------- real runs in subprocesses


def run_train(*overrides: str, run_dir: Path, timeout: float = 900,
              command: tuple[str, ...] = ("retina.train",)) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", *command, *TINY, *overrides, f"paths.log_dir={run_dir.parent}",
         f"hydra.run.dir={run_dir}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )


@pytest.fixture
def val_subset(tmp_path) -> Path:
    """5 NEON val images: 2 processes get 3 each, one image twice (DistributedSampler pads)."""
    full = json.loads((ROOT / "data/neon_trees/annotations/val.json").read_text())
    keep = {im["id"] for im in full["images"][:5]}
    full["images"] = [im for im in full["images"] if im["id"] in keep]
    full["annotations"] = [a for a in full["annotations"] if a["image_id"] in keep]
    path = tmp_path / "val5.json"
    path.write_text(json.dumps(full))
    return path


@pytest.mark.slow
def test_ddp_validation_equals_one_process(tmp_path, val_subset):
    # lr 0 (frozen BN, GroupNorm head): both runs validate the same weights. RetinaNet: its
    # untrained boxes are the anchors, so mAP and AR are not 0. 192 px: P7 is 2x2, so
    # GroupNorm has more than one value per group in a batch of one image.
    same = ["experiment=neon_retinanet", "data.size=192", "trainer.max_epochs=1", "trainer.limit_train_batches=1", "optim.lr=0",
            "callbacks.ema=null", "callbacks.lr_monitor=null", "trainer.check_val_every_n_epoch=1",
            f"data.val_ann={val_subset}", "model.postprocess.score_thresh=0.001"]
    one = run_train(*same, run_dir=tmp_path / "one")
    assert one.returncode == 0, one.stderr[-3000:]
    # through the `retina` command: Lightning starts the second process with its command line
    two = run_train(*same, "trainer=ddp_cpu", run_dir=tmp_path / "two", command=("retina", "train"))
    assert two.returncode == 0, two.stderr[-3000:]
    assert "MEMBER: 2/2" in two.stdout + two.stderr  # two processes joined
    m1 = json.loads((tmp_path / "one" / "metrics.json").read_text())
    m2 = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert m1["val/AR_100"] > 0 and m1["val/mAP_50"] > 0  # numbers that a duplicate would move
    m1.pop("train_seconds"), m2.pop("train_seconds")  # wall time: the one thing that differs
    assert m2 == m1
    # rank 1 logs to its own file and writes no results
    assert "metrics: " in (tmp_path / "two" / "train.log").read_text()
    assert "metrics: " not in (tmp_path / "two" / "train_ddp_process_1.log").read_text()
    # the report of best.ckpt: in one process; after DDP the log says how to write it
    report = json.loads((tmp_path / "one" / "report" / "metrics.json").read_text())
    # best.ckpt: the one epoch's weights, run again by the report (its own batches: float
    # rounding moved mAP by 2e-11 on 2026-12-07; another checkpoint moves it by far more)
    assert report["mAP"] == pytest.approx(m1["val/mAP"], abs=1e-6)
    assert report["mAP_50"] == pytest.approx(m1["val/mAP_50"], abs=1e-6) and report["mAP_50"] > 0
    assert not (tmp_path / "two" / "report").exists()
    assert "retina eval model=" in (tmp_path / "two" / "train.log").read_text()


@pytest.mark.slow
def test_killed_run_resumes_from_last_epoch_end(tmp_path, monkeypatch):
    # The run plans 50 epochs of 6 steps, far more than it gets: it is killed as soon as its
    # first last.ckpt exists (polled, no sleep), wherever it then is (validating, saving, or
    # training the next epoch). Resumed with max_epochs = saved epoch + 2, it trains one epoch.
    run_dir = tmp_path / "outputs" / "train" / "killed"
    last = run_dir / "checkpoints" / "last.ckpt"
    per_epoch = 6
    args = [*SHORT, f"trainer.limit_train_batches={per_epoch}", "trainer.limit_val_batches=1",
            "trainer.max_time=null"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "retina.train", *TINY, *args, "trainer.max_epochs=50",
         f"paths.log_dir={tmp_path / 'outputs'}", f"hydra.run.dir={run_dir}"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 900
        while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert last.exists(), "no last.ckpt within 900 s" if proc.poll() is None else (
            f"the run ended (exit {proc.returncode}) before its first checkpoint: "
            f"{proc.stderr.read().decode()[-2000:]}")
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    saved = load_checkpoint(last)  # complete: the kill left no half-written file
    assert saved["global_step"] == (saved["epoch"] + 1) * per_epoch
    epochs = saved["epoch"] + 2

    first_steps = []
    training_step = DetectionModule.training_step

    def record(self, batch, batch_idx):
        first_steps.append((self.current_epoch, self.global_step))
        return training_step(self, batch, batch_idx)

    monkeypatch.setattr(DetectionModule, "training_step", record)
    # newest last.ckpt: the killed run's; a new max_epochs is a trainer limit, allowed
    cfg = compose_run([*TINY, *args, f"trainer.max_epochs={epochs}", "ckpt_path=last"], run_dir)
    cfg.paths.log_dir = str(tmp_path / "outputs")
    metrics = train(cfg)
    assert first_steps[0] == (saved["epoch"] + 1, saved["global_step"])  # lost only the cut epoch
    assert len(first_steps) == per_epoch  # one epoch more, not a fresh start
    assert metrics["epoch"] == epochs and metrics["global_step"] == epochs * per_epoch
    final = load_checkpoint(last)
    assert final["global_step"] == epochs * per_epoch and final["epoch"] == epochs - 1
