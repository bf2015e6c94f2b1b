"""retina.model.gfl_head: the GFL head's outputs and per-level scales."""

import math

import pytest
import torch

from retina.model.gfl_head import GFLHead


def test_head_outputs_and_level_scales():
    torch.manual_seed(0)  # the result depended on the tests run before it
    head = GFLHead(num_classes=3, num_levels=2, in_channels=32, channels=32, num_convs=1, reg_max=7)
    assert (head.num_anchors, head.box_dim, head.num_classes) == (1, 32, 3)
    feats = [torch.randn(2, 32, 8, 8), torch.randn(2, 32, 4, 4)]
    cls, box = head(feats)
    assert [c.shape for c in cls] == [(2, 3, 8, 8), (2, 3, 4, 4)]
    assert [b.shape for b in box] == [(2, 32, 8, 8), (2, 32, 4, 4)]
    prior = torch.tensor(math.log(0.01 / 0.99))
    torch.testing.assert_close(cls[0].mean(), prior, atol=0.05, rtol=0)
    # zero features: the logits are the bias, exactly the prior
    zero_cls, _ = head([torch.zeros(1, 32, 8, 8), torch.zeros(1, 32, 4, 4)])
    torch.testing.assert_close(zero_cls[0], torch.full_like(zero_cls[0], float(prior)))
    with torch.no_grad():
        head.scales[1] = 2.0
    torch.testing.assert_close(head(feats)[1][1], 2 * box[1])
    with pytest.raises(ValueError, match="zip"):  # 3 feature maps for 2 level scales
        head(feats + feats[:1])
