"""model.channels_last and model.compile: the same network and numbers, trained and evaluated
through the real config."""

import shutil
from pathlib import Path

import pytest
import torch

from retina.training.checkpoint import load_checkpoint
from retina.training.run import build, train
from tests.helpers import TRAINED

QUICK_COMPILE = "model.compile={backend:aot_eager}"  # traced and compiled, no C compiler


def test_channels_last_and_compile_keep_the_state_dict_and_the_outputs(tiny_cfg):
    _, plain = build(tiny_cfg())
    _, fast = build(tiny_cfg("model.channels_last=true", QUICK_COMPILE))
    conv = next(m for m in fast.detector.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert fast.detector._compiled_call_impl is not None
    fast.load_state_dict(plain.state_dict())  # strict: the same keys (no _orig_mod.)
    images = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    plain.eval(), fast.eval()
    with torch.no_grad():
        want, got = plain(images), fast(images)
    scale = max(w.abs().max().item() for w in want[0])  # box maps start near 0
    for w, g in zip(want[0] + want[1], got[0] + got[1]):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4 * scale)


def trains_as_eager(tiny_cfg, run_dir: Path, trained, *switches: str) -> None:
    """Two steps of the shared tiny RetinaNet's recipe with ``switches``: the validation numbers
    and the trained weights are those of the same two steps in eager mode (``trained``)."""
    metrics = train(tiny_cfg("experiment=neon_retinanet", *TRAINED, *switches))
    assert metrics["global_step"] == 2 and trained.metrics["val/AR_100"] > 0
    for key in ("val/mAP", "val/mAP_50", "val/AR_100"):
        assert metrics[key] == pytest.approx(trained.metrics[key], rel=1e-3, abs=1e-9), key
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    ours, eager = load_checkpoint(ckpt), load_checkpoint(trained.ckpt)
    assert ours["state_dict"].keys() == eager["state_dict"].keys()  # plain names, no _orig_mod.
    for part in ("current_model_state", "state_dict"):  # live weights and their average
        for key, value in eager[part].items():
            torch.testing.assert_close(ours[part][key], value, rtol=1e-4, atol=1e-5, msg=key)


@pytest.mark.long  # compiles (aot_eager) and trains twice: over a minute
def test_a_compiled_channels_last_model_trains_two_steps(tiny_cfg, tmp_path, trained_retinanet):
    trains_as_eager(tiny_cfg, tmp_path / "run", trained_retinanet, "model.channels_last=true", QUICK_COMPILE)


@pytest.mark.long
def test_model_compile_true_trains_two_steps_with_inductor(tiny_cfg, tmp_path, trained_retinanet):
    assert shutil.which("cc") or shutil.which("gcc"), (
        "torch.compile's default backend (inductor) needs a C compiler on CPU: install one "
        "(gcc) to run `make test-long`")
    trains_as_eager(tiny_cfg, tmp_path / "run", trained_retinanet, "model.compile=true")
