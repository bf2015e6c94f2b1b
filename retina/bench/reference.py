"""torchvision's RetinaNet as a contender in our pipeline (same data, same COCO numbers).

The recipe is the best torchvision one measured on NEON in a separate comparison of recipes: a
MobileNetV2 ImageNet backbone with the FPN taken from the stage ends, a GroupNorm head,
torchvision's default anchors, losses and postprocess.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models.detection import RetinaNet
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from retina.ops.levels import scale_to_original
from retina.training.module import Batch, CocoDetectionTask


def torchvision_mobilenet_retinanet(
    num_classes: int, size: int, weights: str | None = "IMAGENET1K_V1", freeze_blocks: int = 7
) -> RetinaNet:
    """torchvision RetinaNet, MobileNetV2-FPN (C3-C5 at the ends of the stride 8/16/32
    stages, as ours), GroupNorm head, no resize of the (already resized) inputs."""
    body = torchvision.models.mobilenet_v2(weights=weights, norm_layer=FrozenBatchNorm2d).features
    body[:freeze_blocks].requires_grad_(False)
    backbone = BackboneWithFPN(
        body, {"6": "0", "13": "1", "18": "2"}, [32, 96, 1280], 256, LastLevelP6P7(256, 256)
    )
    head = RetinaNetHead(256, 9, num_classes, norm_layer=partial(nn.GroupNorm, 32))
    model = RetinaNet(backbone, num_classes, min_size=size, max_size=size, head=head)
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
