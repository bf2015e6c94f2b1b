"""retina.training.checkpoint: loading checkpoints (old layouts: ../test_legacy.py)."""

import pytest
import torch

from retina.training.checkpoint import load_checkpoint


def test_bad_checkpoint_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "x.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="x.ckpt is not a loadable"):
        load_checkpoint(str(bad))
    torch.save({"foo": 1}, tmp_path / "y.ckpt")
    with pytest.raises(ValueError, match="not a retina training checkpoint"):
        load_checkpoint(str(tmp_path / "y.ckpt"))
