"""retina.training.atomic_io: checkpoints are written whole or not at all."""

import os

import pytest
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from retina.training.atomic_io import AtomicCheckpointIO, with_atomic_checkpoint_io


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
