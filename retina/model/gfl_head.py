"""GFL's head (Li et al., 2020): joint class-quality scores and box distributions.

Same subnets and output contract as :class:`retina.model.head.RetinaHead`, with one
anchor per location. The class score is trained towards the IoU of the predicted box
(quality focal loss), and each box side is a distribution over 0..reg_max strides
(decoded by :class:`retina.ops.boxes.DistanceCoder`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from retina.model.head import init_convs, prior_bias, subnet


class GFLHead(nn.Module):
    """Classification-quality and distribution box subnets, shared across levels.

    Args:
        num_classes: K foreground classes (no background index).
        num_anchors: anchors per location, 1 (GFL's one square anchor per location).
        num_levels: pyramid levels, one learnable scale of the box logits each.
        in_channels: FPN channels.
        channels: subnet width.
        num_convs: convs per subnet before the predictor.
        group_norm: GroupNorm(32) after each subnet conv.
        prior_prob: initial score of every location and class.
        reg_max: R; each side is a distribution over the R+1 bins 0..R (in strides).
        conv_bias: a bias in the subnet convs (mmdetection's GroupNorm subnets have none).
    """

    background_class = False  # the output contract of retina.model.head: K class channels

    def __init__(
        self,
        num_classes: int,
        num_anchors: int = 1,
        num_levels: int = 5,
        in_channels: int = 256,
        channels: int = 256,
        num_convs: int = 4,
        group_norm: bool = True,
        prior_prob: float = 0.01,
        reg_max: int = 16,
        conv_bias: bool = True,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(
                f"num_classes counts foreground classes and must be >= 1, got {num_classes}"
            )
        if num_anchors != 1:
            raise ValueError(f"GFL has one anchor per location, the anchors give {num_anchors}: "
                             "set anchors.scales_per_octave=1 and anchors.ratios=[1.0]")
        self.num_classes = num_classes
        self.num_anchors = num_anchors
        self.reg_max = reg_max
        self.box_dim = 4 * (reg_max + 1)
        self.cls_subnet = subnet(in_channels, channels, num_convs, group_norm, conv_bias)
        self.box_subnet = subnet(in_channels, channels, num_convs, group_norm, conv_bias)
        self.cls_pred = nn.Conv2d(channels, num_classes, 3, padding=1)
        self.box_pred = nn.Conv2d(channels, self.box_dim, 3, padding=1)
        self.scales = nn.Parameter(torch.ones(num_levels))  # (L,) one per level
        init_convs(self)
        nn.init.constant_(self.cls_pred.bias, prior_bias(prior_prob))

    def forward(self, feats: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """[P3..P7] (B, C, H_l, W_l) -> ([(B, K, H_l, W_l)], [(B, 4*(R+1), H_l, W_l)])."""
        cls_maps = [self.cls_pred(self.cls_subnet(f)) for f in feats]
        scaled = zip(feats, self.scales, strict=True)  # a level count unlike the head's: error
        box_maps = [self.box_pred(self.box_subnet(f)) * s for f, s in scaled]
        return cls_maps, box_maps
