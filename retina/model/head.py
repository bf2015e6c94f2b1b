"""Dense prediction heads shared across pyramid levels.

Output contract of every head: ``(cls_maps, box_maps)``, two lists over levels of
raw conv outputs ``(B, A * K, H_l, W_l)`` and ``(B, A * C, H_l, W_l)``, where A is
anchors per location, K classes and C box channels (4 deltas for RetinaNet).
:func:`flatten_levels` turns them into the anchor layout ``(B, sum(H_l W_l A), .)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def subnet(in_channels: int, channels: int, num_convs: int, group_norm: bool) -> nn.Sequential:
    """num_convs x (conv3x3 + [GroupNorm(32)] + ReLU)."""
    layers: list[nn.Module] = []
    for i in range(num_convs):
        layers.append(nn.Conv2d(in_channels if i == 0 else channels, channels, 3, padding=1))
        if group_norm:
            layers.append(nn.GroupNorm(32, channels))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def prior_bias(prior_prob: float) -> float:
    """Bias b with sigmoid(b) = prior_prob: -log((1 - pi) / pi)."""
    return -math.log((1 - prior_prob) / prior_prob)


def init_convs(module: nn.Module, std: float = 0.01) -> None:
    """Every conv ~ N(0, std), bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=std)
            nn.init.constant_(m.bias, 0.0)


class RetinaHead(nn.Module):
    """RetinaNet's classification and box subnets.

    Args:
        num_classes: K foreground classes (no background index).
        num_anchors: A anchors per location.
        in_channels: FPN channels.
        channels: subnet width.
        num_convs: convs per subnet before the predictor.
        group_norm: GroupNorm(32) after each subnet conv.
        prior_prob: initial foreground probability pi of every anchor and class.
    """

    box_dim = 4

    def __init__(
        self,
        num_classes: int,
        num_anchors: int = 9,
        in_channels: int = 256,
        channels: int = 256,
        num_convs: int = 4,
        group_norm: bool = False,
        prior_prob: float = 0.01,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes counts foreground classes and must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.num_anchors = num_anchors
        self.cls_subnet = subnet(in_channels, channels, num_convs, group_norm)
        self.box_subnet = subnet(in_channels, channels, num_convs, group_norm)
        self.cls_pred = nn.Conv2d(channels, num_anchors * num_classes, 3, padding=1)
        self.box_pred = nn.Conv2d(channels, num_anchors * self.box_dim, 3, padding=1)
        init_convs(self)
        nn.init.constant_(self.cls_pred.bias, prior_bias(prior_prob))

    def forward(self, feats: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """[P3..P7] (B, C, H_l, W_l) -> ([(B, A*K, H_l, W_l)], [(B, A*4, H_l, W_l)])."""
        cls_maps = [self.cls_pred(self.cls_subnet(f)) for f in feats]
        box_maps = [self.box_pred(self.box_subnet(f)) for f in feats]
        return cls_maps, box_maps


def flatten_levels(maps: list[Tensor], channels: int) -> Tensor:
    """[(B, A*C, H_l, W_l)] -> (B, sum(H_l W_l A), C), positions outer, anchors inner."""
    out = []
    for m in maps:
        b, _, h, w = m.shape
        m = m.view(b, -1, channels, h, w)  # (B, A, C, H, W)
        out.append(m.permute(0, 3, 4, 1, 2).reshape(b, -1, channels))  # (B, HWA, C)
    return torch.cat(out, dim=1)
