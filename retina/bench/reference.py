"""torchvision's RetinaNet as a contender in our pipeline (same data, same COCO numbers).

The recipe is the best torchvision one measured on NEON in a separate comparison of recipes: a
MobileNetV2 ImageNet backbone with the FPN taken from the stage ends, a GroupNorm head,
torchvision's losses. Its anchors are either torchvision's defaults (32-512 px, three
ratios, cell corners) or exactly ours (:class:`OurAnchors`, built with
:func:`matching_anchors`); its postprocess either torchvision's defaults or our settings.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models.detection import RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator as TorchvisionAnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from retina.model.anchors import AnchorGenerator, cell_anchors
from retina.ops.levels import scale_to_original
from retina.training.module import Batch, CocoDetectionTask


class OurAnchors(TorchvisionAnchorGenerator):
    """torchvision's ``AnchorGenerator`` placing its boxes as ours do.

    torchvision's own rounds each cell anchor to whole pixels, steps ``input side // map
    side`` pixels between positions (P7 of a 448 px input: 448 // 4 = 112, not 128) and puts
    the centres on the cell corners (``i * stride``). This one keeps exact sizes, steps the
    level's fixed stride and centres at ``(i + offset) * stride``: the same boxes, in the
    same order, as :class:`retina.model.anchors.AnchorGenerator`.

    Args:
        sizes: per level, the anchor sides (the square root of each area) in pixels.
        aspect_ratios: per level, the ratios h / w.
        strides: per level, pixels between positions.
        offset: centres at ``(i + offset) * stride``.
    """

    def __init__(
        self,
        sizes: tuple[tuple[float, ...], ...],
        aspect_ratios: tuple[tuple[float, ...], ...],
        strides: tuple[int, ...],
        offset: float,
    ) -> None:
        super().__init__(sizes, aspect_ratios)
        if len(strides) != len(self.sizes):
            raise ValueError(f"{len(strides)} strides for {len(self.sizes)} levels of sizes")
        self.strides = tuple(int(s) for s in strides)
        self.offset = float(offset)
        # the offset moves every cell by offset * stride: torchvision's grid then adds i * stride
        self.cell_anchors = [cell + self.offset * stride
                             for cell, stride in zip(self.cell_anchors, self.strides)]

    def generate_anchors(self, scales, aspect_ratios, dtype=torch.float32,
                         device: torch.device = torch.device("cpu")) -> Tensor:
        """(R * S, 4) cell anchors centred on (0, 0), exact (torchvision's are rounded)."""
        cell = cell_anchors(1.0, torch.as_tensor(scales, dtype=torch.float64),
                            torch.as_tensor(aspect_ratios, dtype=torch.float64))
        return cell.to(dtype=dtype, device=device)

    def forward(self, image_list: ImageList, feature_maps: list[Tensor]) -> list[Tensor]:
        grid_sizes = [f.shape[-2:] for f in feature_maps]
        device = feature_maps[0].device
        self.set_cell_anchors(feature_maps[0].dtype, device)
        strides = [[torch.tensor(s, device=device)] * 2 for s in self.strides]
        per_image = torch.cat(self.grid_anchors(grid_sizes, strides))  # (sum HWA, 4)
        return [per_image for _ in image_list.image_sizes]


def matching_anchors(ours: AnchorGenerator) -> OurAnchors:
    """The torchvision anchor generator that makes the boxes of ``ours``: per level the sides
    ``size * scale`` for each of our scales, our ratios, strides and offset."""
    unsupported = [k for k in ("integer_cells", "strides_from_input") if getattr(ours, k)]
    if unsupported:
        raise ValueError(f"matching_anchors: {', '.join(unsupported)}=True is torchvision's own "
                         "placement; use torchvision's AnchorGenerator for it")
    sizes = tuple(tuple(size * s for s in ours.scales) for size in ours.sizes)
    return OurAnchors(sizes, (ours.ratios,) * len(sizes), ours.strides, ours.offset)


def torchvision_mobilenet_retinanet(
    num_classes: int,
    size: int,
    weights: str | None = "IMAGENET1K_V1",
    freeze_blocks: int = 7,
    anchor_generator: TorchvisionAnchorGenerator | None = None,
    **postprocess: Any,
) -> RetinaNet:
    """torchvision RetinaNet, MobileNetV2-FPN (C3-C5 at the ends of the stride 8/16/32
    stages, as ours), GroupNorm head, no resize of the (already resized) inputs.

    Args:
        anchor_generator: None: torchvision's default anchors (9 per location, 32-512 px).
        postprocess: ``RetinaNet`` keywords (``score_thresh``, ``nms_thresh``,
            ``detections_per_img``, ``topk_candidates``); torchvision's defaults otherwise.
    """
    body = torchvision.models.mobilenet_v2(weights=weights, norm_layer=FrozenBatchNorm2d).features
    body[:freeze_blocks].requires_grad_(False)
    backbone = BackboneWithFPN(
        body, {"6": "0", "13": "1", "18": "2"}, [32, 96, 1280], 256, LastLevelP6P7(256, 256)
    )
    num_anchors = anchor_generator.num_anchors_per_location()[0] if anchor_generator else 9
    head = RetinaNetHead(256, num_anchors, num_classes, norm_layer=partial(nn.GroupNorm, 32))
    model = RetinaNet(backbone, num_classes, min_size=size, max_size=size, head=head,
                      anchor_generator=anchor_generator, **postprocess)
    model.transform._skip_resize = True  # training inputs keep our scale jitter
    return model


class TorchvisionTask(CocoDetectionTask):
    """A torchvision detector trained and validated exactly like our modules."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None,
        cat_ids: list[int],
        no_decay_norm_bias: bool = False,
    ) -> None:
        super().__init__(optimizer, scheduler, no_decay_norm_bias, cat_ids)
        self.model = model

    @staticmethod
    def unpad(batch: Batch) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
        images, targets = [], []
        for img, (h, w), boxes, labels in zip(
            batch["images"], batch["image_sizes"].tolist(), batch["boxes"], batch["labels"]
        ):
            images.append(img[:, :h, :w])
            keep = labels >= 0
            targets.append({"boxes": boxes[keep], "labels": labels[keep]})
        return images, targets

    def losses(self, batch: Batch) -> dict[str, Tensor]:
        images, targets = self.unpad(batch)
        losses = self.model(images, targets)
        return {"loss_cls": losses["classification"], "loss_box": losses["bbox_regression"]}

    @torch.no_grad()
    def predict_batch(self, batch: Batch) -> list[dict[str, Tensor]]:
        images, _ = self.unpad(batch)
        dets = self.model(images)  # in the (resized) input pixels
        return scale_to_original(dets, batch["image_sizes"], batch["orig_sizes"])
