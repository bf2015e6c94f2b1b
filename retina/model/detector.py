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


class P6P7NoReLU(LastLevelP6P7):
    """torchvision's P6/P7 block without the ReLU before P7 (mmdetection's FPN with
    ``relu_before_extra_convs=False``, the default of its RetinaNet and GFL). Same
    parameters and names (``p6``, ``p7``)."""

    def forward(self, p: list[Tensor], c: list[Tensor], names: list[str]):
        p6 = self.p6(p[-1] if self.use_P5 else c[-1])
        p.extend([p6, self.p7(p6)])
        names.extend(["p6", "p7"])
        return p, names


def valid_mask(image_sizes: Tensor, height: int, width: int) -> Tensor:
    """(B, 2) (h, w) image sizes -> (B, 1, height, width) bool, true inside each image."""
    rows = torch.arange(height, device=image_sizes.device)[None, :, None]  # (1, H, 1)
    cols = torch.arange(width, device=image_sizes.device)[None, None, :]  # (1, 1, W)
    inside = (rows < image_sizes[:, 0, None, None]) & (cols < image_sizes[:, 1, None, None])
    return inside[:, None]  # (B, 1, H, W)


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
        p7_relu: a ReLU between P6 and P7 (torchvision, the paper); mmdetection's FPN has
            none.
        pad_after_norm: the padding beyond each image's size is 0 after normalisation,
            not before (torchvision and mmdetection normalise, then pad); ``forward``
            then needs the image sizes.
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
        p7_relu: bool = True,
        pad_after_norm: bool = False,
    ) -> None:
        super().__init__()
        if p6p7_from not in ("c5", "p5"):
            raise ValueError(f"p6p7_from must be 'c5' or 'p5', got {p6p7_from!r}")
        if anchors.levels != LEVELS:
            raise ValueError(f"the FPN makes the levels {list(LEVELS)}: anchors.levels must be "
                             f"those, got {list(anchors.levels)}")
        self.backbone = backbone
        extra_in = backbone.out_channels[-1] if p6p7_from == "c5" else fpn_channels
        extra = (LastLevelP6P7 if p7_relu else P6P7NoReLU)(extra_in, fpn_channels)
        extra.use_P5 = p6p7_from == "p5"  # torchvision infers it from channel equality
        self.fpn = FeaturePyramidNetwork(list(backbone.out_channels), fpn_channels, extra)
        self.anchors = anchors
        self.head = head(in_channels=fpn_channels, num_anchors=anchors.num_anchors,
                         num_levels=len(LEVELS))
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(1, 3, 1, 1), persistent=False)
        self.pad_after_norm = pad_after_norm

    def forward(
        self, images: Tensor, image_sizes: Tensor | None = None
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Raw per-level outputs.

        Args:
            images: (B, 3, H, W) RGB in [0, 1], H and W divisible by 128 for exact strides,
                each image at the top left, zero-padded.
            image_sizes: (B, 2) or (1, 2) (h, w) of the images before padding; read only
                with ``pad_after_norm`` (None: no padding).

        Returns:
            ``(cls_maps, box_maps)``: lists over P3..P7 of (B, A*K, H_l, W_l) and
            (B, A*C, H_l, W_l).
        """
        x = (images - self.pixel_mean) / self.pixel_std
        if self.pad_after_norm and image_sizes is not None:
            x = torch.where(valid_mask(image_sizes, *x.shape[-2:]), x, 0.0)
        c = self.backbone(x)  # [C3, C4, C5]
        p = self.fpn(OrderedDict((f"c{i + 3}", f) for i, f in enumerate(c)))  # P3..P7
        return self.head(list(p.values()))

    def level_anchors(self, maps: list[Tensor]) -> list[Tensor]:
        """Anchors of the levels of ``maps`` (per level (B, ., H_l, W_l)): per level
        (H_l W_l A, 4), on the maps' device."""
        return self.anchors([tuple(m.shape[-2:]) for m in maps], maps[0].device)
