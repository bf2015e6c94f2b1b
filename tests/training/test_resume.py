"""Safe resume: ``ckpt_path=last`` picks one run or refuses, and a checkpoint of a different
run config is refused with the differing keys (``resume.force=true`` resumes anyway)."""

from __future__ import annotations

import logging
import os

import pytest
import torch

from retina.training.config import compose_run
from retina.training.module import DetectionModule
from retina.training.resume import (
    ABSENT,
    ResumeError,
    check_resume,
    config_differences,
    may_change,
    resolve_ckpt,
)
from retina.training.run import build, run_config_json, train
from tests.helpers import TINY, TRAINED


def _last_ckpts(runs_dir, *names, start=1000):
    """``runs_dir/<name>/checkpoints/last.ckpt`` files, written in the order given."""
    paths = [runs_dir / name / "checkpoints" / "last.ckpt" for name in names]
    for i, path in enumerate(paths):
        path.parent.mkdir(parents=True)
        path.write_bytes(b"x")
        os.utime(path, (start + i, start + i))
    return paths


def test_last_is_the_named_run_directorys_or_the_only_runs(tmp_path):
    runs = tmp_path / "train"
    with pytest.raises(FileNotFoundError, match="ckpt_path=.*gone.ckpt: no such checkpoint"):
        resolve_ckpt(str(tmp_path / "gone.ckpt"), runs / "now", runs)
    with pytest.raises(FileNotFoundError, match=f"ckpt_path=last: no last.ckpt in {runs / 'now'}"):
        resolve_ckpt("last", runs / "now", runs)
    assert resolve_ckpt(None, runs / "now", runs) is None
    (only,) = _last_ckpts(runs, "a")
    assert resolve_ckpt("last", runs / "now", runs) == str(only)  # one run: that one
    older, newer = _last_ckpts(runs, "b", "c")
    assert resolve_ckpt("last", runs / "b", runs) == str(older)  # the run named: its own


def test_last_refuses_when_several_runs_hold_one_and_lists_them(tiny_cfg, tmp_path, monkeypatch):
    runs = tmp_path / "outputs" / "train"  # tiny_cfg's log_dir / task_name
    older, newer = _last_ckpts(runs, "2026-01-01_10-00-00", "2026-01-02_10-00-00")
    monkeypatch.setattr("retina.training.run.build",
                        lambda cfg: pytest.fail("refused only after the data set-up"))
    with pytest.raises(ResumeError) as err:
        train(tiny_cfg("ckpt_path=last"))
    message = str(err.value)
    assert "2 runs under" in message and "hydra.run.dir=RUN ckpt_path=last" in message
    listed = message.splitlines()[1:]
    assert listed == [f"  {newer.parents[1]}", f"  {older.parents[1]}"]  # newest first


def test_only_limits_paths_and_loggers_may_change():
    assert all(map(may_change, ["trainer.max_epochs", "trainer.limit_val_batches",
                                "trainer.max_time", "paths.output_dir", "ckpt_path",
                                "resume.force", "logger.wandb.offline", "logger"]))
    assert not any(map(may_change, ["loss.gamma", "trainer.precision", "data.size",
                                    "model.detector.head.channels", "seed", "trainer"]))
    old = {"a": 1, "b": {"c": 2, "d": [1, 2]}, "gone": {"x": 1}}
    new = {"a": 1, "b": {"c": 3, "d": [1, 2]}, "added": 5}
    assert config_differences(old, new) == [
        ("b.c", 2, 3), ("gone", {"x": 1}, ABSENT), ("added", ABSENT, 5)]


def _checkpoint_of(cfg, path):
    """A file ``load_checkpoint`` accepts, holding ``cfg`` as its run config (no weights)."""
    torch.save({"state_dict": {}, "hyper_parameters": {"run_config": run_config_json(cfg)}}, path)
    return path


def test_the_stored_run_config_is_compared_with_the_current_one(tmp_path):
    recipe = [*TINY, "experiment=neon_retinanet"]
    first = compose_run(recipe, tmp_path / "first")
    first.paths.root_dir = "/old/checkout"  # moved since: data paths are built from it
    ckpt = _checkpoint_of(first, tmp_path / "first.ckpt")
    assert first.data.train_ann.startswith("/old/checkout/data/")
    same = compose_run([*recipe, "trainer.max_epochs=80", "logger=tensorboard"], tmp_path / "b")
    check_resume(ckpt, same)  # another run dir, checkout, limit and logger: accepted
    changed = compose_run([*recipe, "loss.gamma=1.0", "data.size=96"], tmp_path / "c")
    with pytest.raises(ResumeError) as err:
        check_resume(ckpt, changed)
    lines = str(err.value).splitlines()
    assert lines[0] == (f"refusing to resume: {ckpt} was trained with a different run config "
                        "(3 keys, checkpoint -> now):")
    assert lines[1:4] == ["  data.size: 128 -> 96", "  loss.gamma: 2.0 -> 1.0",
                          "  model.criterion.gamma: 2.0 -> 1.0"]
    check_resume(ckpt, changed, force=True)  # resume.force=true: a warning only


def _resume_cfg(tiny_cfg, trained, *overrides):
    """The recipe of ``trained_retinanet``, resuming its last.ckpt in a new run directory."""
    return tiny_cfg("experiment=neon_retinanet", *TRAINED, f"ckpt_path={trained.ckpt}", *overrides)


# With a real checkpoint, the session's tiny RetinaNet (slow: these train it when no other test
# has): the check after the real data set-up, and a forced resume that trains on.


@pytest.mark.slow
def test_a_resume_with_the_same_recipe_and_longer_limits_is_accepted(tiny_cfg, trained_retinanet):
    cfg = _resume_cfg(tiny_cfg, trained_retinanet, "trainer.max_epochs=3", "trainer.max_time=null",
                      "trainer.limit_val_batches=1", "logger=tensorboard")
    build(cfg)
    check_resume(trained_retinanet.ckpt, cfg)  # another run dir and limits: no error


@pytest.mark.slow
def test_a_changed_loss_gamma_is_refused_with_the_key_named(tiny_cfg, trained_retinanet,
                                                            monkeypatch):
    steps = []
    monkeypatch.setattr(DetectionModule, "training_step", lambda *a: steps.append(a))
    with pytest.raises(ResumeError) as err:
        train(_resume_cfg(tiny_cfg, trained_retinanet, "loss.gamma=1.0"))
    message = str(err.value)
    assert f"refusing to resume: {trained_retinanet.ckpt} was trained with" in message
    assert "  loss.gamma: 2.0 -> 1.0" in message.splitlines()
    assert "resume.force=true" in message and steps == []


@pytest.mark.slow
def test_resume_force_continues_with_a_warning(tiny_cfg, trained_retinanet, caplog):
    with caplog.at_level(logging.WARNING, logger="retina.training.resume"):
        metrics = train(_resume_cfg(tiny_cfg, trained_retinanet, "loss.gamma=1.0",
                                    "resume.force=true", "trainer.max_epochs=2",
                                    "trainer.limit_val_batches=1"))
    assert metrics["global_step"] == 4 and metrics["epoch"] == 2  # 2 steps on top of 2
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "retina.training.resume"]
    assert warning.startswith("resume.force=true: resuming although") and "loss.gamma" in warning
