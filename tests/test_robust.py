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
from conftest import TINY
from lightning.pytorch.plugins.io import TorchCheckpointIO

from retina.losses.functional import normalizer
from retina.training.atomic_io import AtomicCheckpointIO, with_atomic_checkpoint_io
from retina.training.checkpoint import load_checkpoint
from retina.training.config import ROOT, compose_run
from retina.training.module import DetectionModule
from retina.training.nonfinite import NonFiniteLossError
from retina.training.run import train

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


def test_atomic_checkpoint_write_keeps_the_previous_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": torch.tensor(1)}, target)
    (target.parent / ".last.ckpt.from-killed-run.tmp").write_bytes(b"half")  # left by a kill

    def interrupted(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt  # e.g. Ctrl-C mid-write

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": torch.tensor(2)}, target)
    monkeypatch.undo()
    assert torch.load(target)["step"] == 1
    assert os.listdir(target.parent) == ["last.ckpt"]  # no temporary files left

    io.save_checkpoint({"step": torch.tensor(3)}, target)
    assert torch.load(target)["step"] == 3
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # like any file, not mkstemp's 0600


def test_atomic_checkpoint_io_unless_the_user_chose_one():
    assert [type(p) for p in with_atomic_checkpoint_io(None)] == [AtomicCheckpointIO]
    own = TorchCheckpointIO()
    assert with_atomic_checkpoint_io([own]) == [own]


# --- two processes with gloo -------------------------------------------------------------

# One process of a 2-process gloo group: ``python -c GLOO_CASES rank init_file save_dir``
# prints what it saw as JSON. A script, not multiprocessing: the children import torch and
# two small modules instead of this test file (Lightning, the data pipeline).
GLOO_CASES = """
import json, sys
from datetime import timedelta
import torch
import torch.distributed as dist
from retina.losses.functional import normalizer
from retina.training.nonfinite import NonFiniteGuard, NonFiniteLossError

rank, init_file, save_dir = int(sys.argv[1]), sys.argv[2], sys.argv[3]
dist.init_process_group("gloo", init_method="file://" + init_file, rank=rank, world_size=2,
                        timeout=timedelta(seconds=60))
out = {
    "normalizer": normalizer(torch.tensor([3.0, 6.0][rank])).item(),
    "normalizer_floor": normalizer(torch.tensor([0.0, 1.0][rank])).item(),
}
batch = {"images": torch.zeros(1, 3, 4, 4), "image_ids": torch.tensor([10 + rank])}
loss = torch.tensor([float("nan"), 1.0][rank])  # NaN on rank 0 only
skip = NonFiniteGuard(skip=True)
out["skip_goes_on"] = skip(loss, {"loss_cls": loss}, batch, epoch=0, step=5)
out["skipped"] = skip.skipped
try:
    NonFiniteGuard(save_dir=save_dir)(loss, {"loss_cls": loss}, batch, epoch=0, step=5)
    out["error"] = None
except NonFiniteLossError as err:
    out["error"] = str(err)
dist.destroy_process_group()
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("gloo")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen([sys.executable, "-c", GLOO_CASES, str(rank), str(tmp / "init"),
                               str(tmp / "nonfinite")], cwd=ROOT, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for rank in (0, 1)]
    try:
        outs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    return {rank: json.loads(out) for rank, (out, _) in enumerate(outs)} | {"save_dir": tmp / "nonfinite"}


def test_normalizer_is_the_mean_over_processes_floored_at_one(two_processes):
    assert normalizer(torch.tensor(3.0)).item() == 3.0  # one process: the count itself
    for rank in (0, 1):
        assert two_processes[rank]["normalizer"] == 4.5  # (3 + 6) / 2
        assert two_processes[rank]["normalizer_floor"] == 1.0  # (0 + 1) / 2 < 1


def test_nonfinite_on_one_process_skips_or_stops_all(two_processes):
    # a process skipping alone would leave the other waiting for its gradients
    assert [two_processes[r]["skip_goes_on"] for r in (0, 1)] == [False, False]
    assert [two_processes[r]["skipped"] for r in (0, 1)] == [1, 1]
    saved = two_processes["save_dir"] / "epoch0_step5_rank0.pt"
    assert "image ids [10]" in two_processes[0]["error"] and str(saved) in two_processes[0]["error"]
    assert "on another process at epoch 0, global step 5" in two_processes[1]["error"]
    assert os.listdir(two_processes["save_dir"]) == [saved.name]  # only the NaN process's batch
    assert torch.load(saved)["image_ids"].tolist() == [10]


# --- real runs in subprocesses ----------------------------------------------------------

def run_train(*overrides: str, run_dir: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "retina.train", *TINY, *overrides, f"paths.log_dir={run_dir.parent}",
         f"hydra.run.dir={run_dir}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )


@pytest.mark.slow
def test_ddp_cpu_fast_dev_run(tmp_path):
    run = run_train("trainer=ddp_cpu", "debug=fdr", run_dir=tmp_path / "ddp")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "MEMBER: 2/2" in run.stdout + run.stderr  # two processes joined
    assert "val/mAP" in json.loads((tmp_path / "ddp" / "metrics.json").read_text())


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
    two = run_train(*same, "trainer=ddp_cpu", run_dir=tmp_path / "two")
    assert two.returncode == 0, two.stderr[-3000:]
    m1 = json.loads((tmp_path / "one" / "metrics.json").read_text())
    m2 = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert m1["val/AR_100"] > 0 and m1["val/mAP_50"] > 0  # numbers that a duplicate would move
    assert m2 == m1
    # rank 1 logs to its own file and writes no results
    assert "metrics: " in (tmp_path / "two" / "train.log").read_text()
    assert "metrics: " not in (tmp_path / "two" / "train_ddp_process_1.log").read_text()


@pytest.mark.slow
def test_killed_run_resumes_from_last_epoch_end(tmp_path, monkeypatch):
    run_dir = tmp_path / "outputs" / "train" / "killed"
    last = run_dir / "checkpoints" / "last.ckpt"
    epochs, per_epoch = 4, 6
    args = [*SHORT, f"trainer.max_epochs={epochs}", f"trainer.limit_train_batches={per_epoch}",
            "trainer.limit_val_batches=1", "trainer.max_time=null"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "retina.train", *TINY, *args, f"paths.log_dir={tmp_path / 'outputs'}",
         f"hydra.run.dir={run_dir}"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 600
        while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)  # into the next epoch's training steps
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    saved = load_checkpoint(last)  # complete: the kill left no half-written file
    assert 0 <= saved["epoch"] < epochs - 1 and saved["global_step"] == (saved["epoch"] + 1) * per_epoch

    first_steps = []
    training_step = DetectionModule.training_step

    def record(self, batch, batch_idx):
        first_steps.append((self.current_epoch, self.global_step))
        return training_step(self, batch, batch_idx)

    monkeypatch.setattr(DetectionModule, "training_step", record)
    cfg = compose_run([*TINY, *args, "ckpt_path=last"], run_dir)  # newest last.ckpt: the killed run's
    cfg.paths.log_dir = str(tmp_path / "outputs")
    metrics = train(cfg)
    assert first_steps[0] == (saved["epoch"] + 1, saved["global_step"])  # lost only the cut epoch
    assert metrics["epoch"] == epochs and metrics["global_step"] == epochs * per_epoch
    final = load_checkpoint(last)
    assert final["global_step"] == epochs * per_epoch and final["epoch"] == epochs - 1
