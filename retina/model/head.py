"""Dense prediction heads shared across pyramid levels.

Output contract of every head: ``(cls_maps, box_maps)``, two lists over levels of
raw conv outputs ``(B, A * K, H_l, W_l)`` and ``(B, A * C, H_l, W_l)``, where A is
anchors per location, K classes and C box channels (4 deltas for RetinaNet).
:func:`retina.ops.levels.flatten_levels` turns them into the anchor layout.
"""

from __future__ import annotations

import math

from torch import Tensor, nn


def subnet(
    in_channels: int, channels: int, num_convs: int, group_norm: bool, bias: bool = True
) -> nn.Sequential:
    """num_convs x (conv3x3 [with bias] + [GroupNorm(32)] + ReLU)."""
    layers: list[nn.Module] = []
    for i in range(num_convs):
        in_ch = in_channels if i == 0 else channels
        layers.append(nn.Conv2d(in_ch, channels, 3, padding=1, bias=bias))
        if group_norm:
            layers.append(nn.GroupNorm(32, channels))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def prior_bias(prior_prob: float) -> float:
    """Bias b with sigmoid(b) = prior_prob: -log((1 - pi) / pi)."""
    return -math.log((1 - prior_prob) / prior_prob)


def background_bias(prior_prob: float, num_classes: int) -> float:
    """Bias b of the background channel, the K class channels at 0, with which a (K+1)-way
    softmax gives the background 1 - pi and each class pi / K (Detectron's choice):
    e^b / (e^b + K) = 1 - pi, so b = log(K (1 - pi) / pi)."""
    return math.log(num_classes * (1 - prior_prob) / prior_prob)


def init_convs(module: nn.Module, std: float = 0.01) -> None:
    """Every conv ~ N(0, std), bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0.0)


class RetinaHead(nn.Module):
    """RetinaNet's classification and box subnets.

    Args:
        num_classes: K foreground classes (no background index).
        num_anchors: A anchors per location (the Detector passes its anchor generator's).
        num_levels: pyramid levels (all share the head's weights).
        in_channels: FPN channels.
        channels: subnet width.
        num_convs: convs per subnet before the predictor.
        group_norm: GroupNorm(32) after each subnet conv.
        prior_prob: initial foreground probability pi of every anchor and class (sigmoid),
            or of every anchor over all classes (softmax, see :func:`background_bias`).
        background_class: K+1 class channels per anchor, channel 0 the background of a
            softmax (softmax focal loss, OHEM); detections read :func:`foreground_logits`.
        conv_bias: a bias in the subnet convs (torchvision's v2 head has none before its
            GroupNorm).
    """

    box_dim = 4

    def __init__(
        self,
        num_classes: int,
        num_anchors: int = 9,
        num_levels: int = 5,
        in_channels: int = 256,
        channels: int = 256,
        num_convs: int = 4,
        group_norm: bool = False,
        prior_prob: float = 0.01,
        background_class: bool = False,
        conv_bias: bool = True,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes counts foreground classes and must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.num_anchors = num_anchors
        self.background_class = background_class
        self.cls_channels = num_classes + 1 if background_class else num_classes
        self.cls_subnet = subnet(in_channels, channels, num_convs, group_norm, conv_bias)
        self.box_subnet = subnet(in_channels, channels, num_convs, group_norm, conv_bias)
        self.cls_pred = nn.Conv2d(channels, num_anchors * self.cls_channels, 3, padding=1)
        self.box_pred = nn.Conv2d(channels, num_anchors * self.box_dim, 3, padding=1)
        init_convs(self)
        if background_class:
            bias = self.cls_pred.bias.detach().view(num_anchors, self.cls_channels)  # (A, K+1)
            bias[:, 0] = background_bias(prior_prob, num_classes)
        else:
            nn.init.constant_(self.cls_pred.bias, prior_bias(prior_prob))

    def forward(self, feats: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """[P3..P7] (B, C, H_l, W_l) -> ([(B, A*K', H_l, W_l)], [(B, A*4, H_l, W_l)]),
        K' = K, or K+1 with ``background_class``."""
        cls_maps = [self.cls_pred(self.cls_subnet(f)) for f in feats]
        box_maps = [self.box_pred(self.box_subnet(f)) for f in feats]
        return cls_maps, box_maps
