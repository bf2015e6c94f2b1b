"""retina.ops.levels: per-level maps to flat rows, softmax foreground logits, rescaling."""

import torch

from retina.ops.levels import flatten_levels, foreground_logits, scale_to_original


def test_flatten_follows_anchor_layout():
    # channel a*K + k at (y, x) must land at row (y*W + x)*A + a
    a, k, h, w = 3, 2, 2, 4
    m = torch.arange(a * k * h * w).float().view(1, a * k, h, w)
    flat = flatten_levels([m], k)
    y, x, ai, ki = 1, 2, 2, 1
    assert flat[0, (y * w + x) * a + ai, ki] == m[0, ai * k + ki, y, x]


def test_foreground_logits_give_the_softmax_probabilities_through_a_sigmoid():
    torch.manual_seed(4)
    k, a = 2, 3
    maps = [torch.randn(2, a * (k + 1), 4, 4) * 5, torch.randn(2, a * (k + 1), 2, 2) * 5]
    out = foreground_logits(maps, k)
    for m, o in zip(maps, out):
        p = m.view(2, a, k + 1, *m.shape[-2:]).softmax(dim=2)[:, :, 1:]  # (B, A, K, H, W)
        torch.testing.assert_close(o.sigmoid(), p.reshape(o.shape), atol=1e-6, rtol=1e-4)


def test_scale_to_original_scales_spread_per_axis():
    det = {"boxes": torch.tensor([[10.0, 10.0, 20.0, 30.0]]), "scores": torch.tensor([0.9]),
           "labels": torch.tensor([0]), "spread": torch.tensor([[1.0, 2.0, 3.0, 4.0]])}
    # input (H, W) = (100, 200) from original (200, 100): x * 0.5, y * 2
    (out,) = scale_to_original([det], torch.tensor([[100, 200]]), torch.tensor([[200, 100]]))
    torch.testing.assert_close(out["spread"], torch.tensor([[0.5, 4.0, 1.5, 8.0]]))
    torch.testing.assert_close(out["boxes"], torch.tensor([[5.0, 20.0, 10.0, 60.0]]))
