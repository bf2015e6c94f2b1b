"""retina.model.head and retina.model.gfl_head: the layers and the initialisation of both heads,
with the expected numbers worked out here (never taken from the functions under test)."""

import math

import pytest
import torch
from torch import nn

from retina.model.gfl_head import GFLHead
from retina.model.head import RetinaHead


def layer_kinds(seq: nn.Sequential) -> list[str]:
    return [type(m).__name__ for m in seq]


@pytest.mark.parametrize("group_norm", [False, True])
def test_subnets_are_conv_norm_relu_blocks(group_norm):
    head = RetinaHead(2, num_anchors=3, in_channels=64, channels=32, num_convs=3,
                      group_norm=group_norm)
    block = ["Conv2d", "GroupNorm", "ReLU"] if group_norm else ["Conv2d", "ReLU"]
    for subnet in (head.cls_subnet, head.box_subnet):
        assert layer_kinds(subnet) == block * 3
        convs = [m for m in subnet if isinstance(m, nn.Conv2d)]
        assert [(c.in_channels, c.out_channels) for c in convs] == [(64, 32), (32, 32), (32, 32)]
        assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)
        if group_norm:
            assert all(m.num_groups == 32 for m in subnet if isinstance(m, nn.GroupNorm))
    # predictors: A * K class channels and A * 4 box channels, 3x3 "same" convs
    assert (head.cls_pred.in_channels, head.cls_pred.out_channels) == (32, 3 * 2)
    assert (head.box_pred.in_channels, head.box_pred.out_channels) == (32, 3 * 4)
    assert head.cls_pred.padding == head.box_pred.padding == (1, 1)
    assert head.cls_pred.kernel_size == head.box_pred.kernel_size == (3, 3)
    cls, box = head([torch.randn(2, 64, 6, 5)])  # maps of the features' size
    assert (cls[0].shape, box[0].shape) == ((2, 6, 6, 5), (2, 12, 6, 5))


@pytest.mark.parametrize("pi,bias", [(0.01, -math.log(99)), (0.1, -math.log(9)), (0.5, 0.0)])
def test_sigmoid_class_bias_is_the_prior(pi, bias):
    # sigmoid(b) = pi: b = log(pi / (1 - pi)); pi 0.01 -> -log 99, 0.1 -> -log 9, 0.5 -> 0
    for head in (RetinaHead(4, num_anchors=2, in_channels=32, channels=32, num_convs=1,
                            prior_prob=pi),
                 GFLHead(4, in_channels=32, channels=32, num_convs=1, prior_prob=pi)):
        torch.testing.assert_close(head.cls_pred.bias, torch.full_like(head.cls_pred.bias, bias))
        assert (head.box_pred.bias == 0).all()


def test_softmax_background_bias_gives_the_background_1_minus_pi():
    # K = 3, pi = 0.01: background bias b with e^b / (e^b + 3) = 0.99 -> b = log(3 * 99) = log 297;
    # the class channels stay 0
    head = RetinaHead(3, num_anchors=2, in_channels=32, channels=32, num_convs=1,
                      prior_prob=0.01, background_class=True)
    bias = head.cls_pred.bias.view(2, 4)
    torch.testing.assert_close(bias[:, 0], torch.full((2,), math.log(297)))
    assert (bias[:, 1:] == 0).all()


def test_every_conv_starts_gaussian_with_std_001_and_zero_bias():
    torch.manual_seed(0)
    for head in (RetinaHead(80, in_channels=256, channels=256, num_convs=2),
                 GFLHead(80, in_channels=256, channels=256, num_convs=2)):
        for name, m in head.named_modules():
            if isinstance(m, nn.Conv2d):
                # 256 * 256 * 9 (or more) samples of N(0, 0.01): the std within 2 %
                assert m.weight.std().item() == pytest.approx(0.01, rel=0.02), name
                assert abs(m.weight.mean().item()) < 1e-3, name
                if name.endswith(("subnet.0", "subnet.2", "subnet.3")):
                    assert (m.bias == 0).all(), name


def test_gfl_head_channels_and_scales():
    head = GFLHead(5, num_levels=3, in_channels=32, channels=32, num_convs=2, reg_max=7)
    assert head.box_dim == 4 * 8 and head.box_pred.out_channels == 32
    assert head.cls_pred.out_channels == 5 and head.num_anchors == 1
    assert layer_kinds(head.cls_subnet) == ["Conv2d", "GroupNorm", "ReLU"] * 2  # GN by default
    torch.testing.assert_close(head.scales.detach(), torch.ones(3))
    with pytest.raises(ValueError, match="one anchor per location, the anchors give 9"):
        GFLHead(5, num_anchors=9)
    for make in (RetinaHead, GFLHead):
        with pytest.raises(ValueError, match="must be >= 1, got 0"):
            make(0)
        assert make(1, channels=32, in_channels=32, num_convs=1).num_classes == 1  # NEON's one


def test_heads_run_every_level_through_the_same_weights():
    # the same features at two levels give the same maps (the GFL scale of level 1 set to 1)
    torch.manual_seed(1)
    f = torch.randn(1, 32, 4, 4)
    for head in (RetinaHead(2, num_anchors=1, num_levels=2, in_channels=32, channels=32,
                            num_convs=1),
                 GFLHead(2, num_levels=2, in_channels=32, channels=32, num_convs=1)):
        cls, box = head([f, f])
        torch.testing.assert_close(cls[0], cls[1])
        torch.testing.assert_close(box[0], box[1])
