"""The network: backbone -> FPN (P3-P7) -> head. Pure: no loss, no NMS."""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import torch
from torch import Tensor, nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from retina.model.anchors import AnchorGenerator
from retina.model.backbone import Backbone

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LEVELS = (3, 4, 5, 6, 7)  # P3-P7: C3-C5 through the FPN, then P6 and P7


class Detector(nn.Module):
    """A dense single-stage detector network.

    The anchor generator fixes what the head's shape depends on: the head is built here
    with ``in_channels`` (the FPN width), ``num_anchors`` (anchors per location) and
    ``num_levels`` from it, so they are never configured twice.

    Args:
        backbone: returns [C3, C4, C5].
        head: builds the head from ``in_channels``, ``num_anchors`` and ``num_levels``
            (e.g. ``functools.partial(RetinaHead, num_classes=K)``); the head maps
            [P3..P7] to ``(cls_maps, box_maps)`` (see ``retina.model.head``).
        anchors: the anchors of the levels P3..P7.
        fpn_channels: FPN width.
        p6p7_from: "c5" (the paper) or "p5": the input of the P6 conv.
        pixel_mean: per-channel mean of images in [0, 1].
        pixel_std: per-channel std of images in [0, 1].
    """

    def __init__(
        self,
        backbone: Backbone,
        head: Callable[..., nn.Module],
        anchors: AnchorGenerator,
        fpn_channels: int = 256,
        p6p7_from: str = "c5",
        pixel_mean: tuple[float, float, float] = IMAGENET_MEAN,
        pixel_std: tuple[float, float, float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        if p6p7_from not in ("c5", "p5"):
            raise ValueError(f"p6p7_from must be 'c5' or 'p5', got {p6p7_from!r}")
        if anchors.levels != LEVELS:
            raise ValueError(f"the FPN makes the levels {list(LEVELS)}: anchors.levels must be "
                             f"those, got {list(anchors.levels)}")
        self.backbone = backbone
        extra_in = backbone.out_channels[-1] if p6p7_from == "c5" else fpn_channels
        extra = LastLevelP6P7(extra_in, fpn_channels)
        extra.use_P5 = p6p7_from == "p5"  # torchvision infers it from channel equality
        self.fpn = FeaturePyramidNetwork(list(backbone.out_channels), fpn_channels, extra)
        self.anchors = anchors
        self.head = head(in_channels=fpn_channels, num_anchors=anchors.num_anchors,
                         num_levels=len(LEVELS))
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Raw per-level outputs.

        Args:
            images: (B, 3, H, W) RGB in [0, 1], H and W divisible by 128 for exact strides.

        Returns:
            ``(cls_maps, box_maps)``: lists over P3..P7 of (B, A*K, H_l, W_l) and
            (B, A*C, H_l, W_l).
        """
        x = (images - self.pixel_mean) / self.pixel_std
        c = self.backbone(x)  # [C3, C4, C5]
        p = self.fpn(OrderedDict((f"c{i + 3}", f) for i, f in enumerate(c)))  # P3..P7
        return self.head(list(p.values()))

    def level_anchors(self, maps: list[Tensor]) -> list[Tensor]:
        """Anchors of the levels of ``maps`` (per level (B, ., H_l, W_l)): per level
        (H_l W_l A, 4), on the maps' device."""
        return self.anchors([tuple(m.shape[-2:]) for m in maps], maps[0].device)
