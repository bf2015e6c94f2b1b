"""model.channels_last and model.compile: the same network and numbers, trained and evaluated
through the real config."""

import shutil

import pytest
import torch

from retina.training.run import build, train

TWO_STEPS = ["debug=fdr", "trainer.max_steps=2", "trainer.limit_train_batches=2"]
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


def test_a_compiled_channels_last_model_trains_two_steps(tiny_cfg):
    metrics = train(tiny_cfg(*TWO_STEPS, "model.channels_last=true",
                             QUICK_COMPILE))
    assert metrics["val/mAP"] >= 0 and metrics["val/mAP_50"] >= 0


@pytest.mark.slow
@pytest.mark.skipif(not (shutil.which("cc") or shutil.which("gcc")),
                    reason="torch.compile's default backend (inductor) needs a C compiler on CPU")
def test_model_compile_true_trains_two_steps_with_inductor(tiny_cfg):
    metrics = train(tiny_cfg(*TWO_STEPS, "model.compile=true"))
    assert metrics["val/mAP"] >= 0
