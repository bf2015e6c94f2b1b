"""The whole inference path as one traceable module with fixed-size outputs.

TorchScript and ONNX exports trace :class:`DetectionGraph`. Its contract:

    images     (B, 3, H, W) uint8 RGB, any B, H, W
    -> boxes   (B, D, 4) float32 x1y1x2y2 in the pixels of ``images``
       scores  (B, D) float32, decreasing within an image
       labels  (B, D) int64 in 0..K-1, -1 in padding rows
       num_dets (B,) int64: rows [0, num_dets) of each image are detections
       spread  (B, D, 4) float32 per-side std in pixels (GFL only)

with D = ``postprocess.max_det``; padding rows are zero (labels -1). Inside: resize
to the fixed ``input_size`` (bilinear, antialiased, rounded to 8 bits like the uint8
eval resize; a graph built with ``resize=False`` takes images of exactly that size and
has no resize: the runtimes' cached graphs, whose images torchvision resizes), zero-pad
to ``padded_size`` (zero after normalisation instead, for a Detector with
``pad_after_norm``), then the one inference path
(:func:`retina.ops.inference.detect`, ``padded=True``: the eager candidates and NMS with
fixed-size outputs, boxes rescaled to the given images).
Anchors are constants of ``padded_size``: the network input size is fixed, the image
size is not. With ``dtype`` float16 or bfloat16 the network runs in that type (weights
and activations: exports for GPUs), the postprocess in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from retina.model.detector import Detector
from retina.ops.inference import detect
from retina.ops.postprocess import Postprocess


def resize_uint8(images: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, 3, H, W) uint8 -> (B, 3, h, w) float32 in [0, 1], 8-bit values.

    Bilinear with antialiasing (``align_corners=False``), rounded and clamped to 0..255,
    then scaled by 1/255: torchvision's uint8 ``Resize`` + ``ToDtype(scale=True)``
    computed in float (its non-AVX path; the AVX path may differ by one level).
    """
    x = F.interpolate(images.float(), size=size, mode="bilinear", align_corners=False,
                      antialias=True)
    return x.round().clamp(0, 255) * (1.0 / 255)


class CastNetwork(nn.Module):
    """The detector in another float type: images cast to it, its maps back to float32 (for
    the postprocess). Has what :func:`retina.ops.inference.detect` needs of a network."""

    def __init__(self, detector: Detector, dtype: torch.dtype) -> None:
        super().__init__()
        self.detector = detector.to(dtype)
        self.dtype = dtype

    @property
    def head(self) -> nn.Module:
        return self.detector.head

    def forward(self, images: Tensor, image_sizes: Tensor | None = None
                ) -> tuple[list[Tensor], list[Tensor]]:
        cls_maps, box_maps = self.detector(images.to(self.dtype), image_sizes)
        return [m.float() for m in cls_maps], [m.float() for m in box_maps]

    def level_anchors(self, maps: list[Tensor]) -> list[Tensor]:
        return self.detector.level_anchors(maps)


class DetectionGraph(nn.Module):
    """uint8 images -> padded detections in their own pixels (see the module docstring).

    Args:
        detector: the network.
        postprocess: thresholds and decoder.
        anchors: per level (N_l, 4) anchors of a ``padded_size`` input.
        input_size: (h, w) the images are resized to (the eval resize target).
        padded_size: (H, W) network input, ``input_size`` rounded up to the padding
            multiple.
        resize: resize the images to ``input_size`` (False: they come at that size).
        dtype: the network's float type (float32; float16 or bfloat16 for GPUs).
    """

    def __init__(
        self, detector: Detector, postprocess: Postprocess, anchors: list[Tensor],
        input_size: tuple[int, int], padded_size: tuple[int, int], resize: bool = True,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        self.detector = detector if dtype == torch.float32 else CastNetwork(detector, dtype)
        self.resize = resize
        self.dtype = dtype
        self.postprocess = postprocess
        for i, a in enumerate(anchors):
            self.register_buffer(f"anchors_{i}", a, persistent=False)
        self.num_levels = len(anchors)
        self.input_size = tuple(input_size)
        self.padded_size = tuple(padded_size)
        self.register_buffer("image_sizes", torch.tensor([self.input_size]), persistent=False)

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        """(B, 3, H, W) uint8 -> boxes, scores, labels, num_dets[, spread]."""
        h, w = self.input_size
        if self.resize:
            x = resize_uint8(images, (h, w))  # (B, 3, h, w)
        else:  # (B, 3, h, w) already
            x = images.float() * (1.0 / 255)
        x = F.pad(x, (0, self.padded_size[1] - w, 0, self.padded_size[0] - h))  # (B, 3, H', W')
        anchors = [getattr(self, f"anchors_{i}") for i in range(self.num_levels)]
        in_hw = torch._shape_as_tensor(images)[2:][None]  # (1, 2) H, W of the given images
        return detect(self.detector, self.postprocess, x, self.image_sizes, in_hw, anchors,
                      padded=True)
