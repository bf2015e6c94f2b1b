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
eval resize), zero-pad to ``padded_size``, network, the postprocess of
:class:`retina.postprocess.Postprocess` (same candidates, same offset NMS), rescale.
Anchors are constants of ``padded_size``: the network input size is fixed, the image
size is not.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import nms

from retina.model.detector import Detector
from retina.postprocess import Postprocess


def resize_uint8(images: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, 3, H, W) uint8 -> (B, 3, h, w) float32 in [0, 1], 8-bit values.

    Bilinear with antialiasing (``align_corners=False``), rounded and clamped to 0..255,
    then scaled by 1/255: torchvision's uint8 ``Resize`` + ``ToDtype(scale=True)``
    computed in float (its non-AVX path; the AVX path may differ by one level).
    """
    x = F.interpolate(images.float(), size=size, mode="bilinear", align_corners=False,
                      antialias=True)
    return x.round().clamp(0, 255) * (1.0 / 255)


def padded_postprocess(
    postprocess: Postprocess, cls_maps: list[Tensor], box_maps: list[Tensor],
    anchors: list[Tensor], image_sizes: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor, dict[str, Tensor]]:
    """:class:`Postprocess` with fixed-size outputs and no data-dependent Python.

    Same candidates (``Postprocess.candidates``), same offset NMS over the whole batch
    (one ``nms`` call); instead of splitting per image, each kept detection's rank within
    its image gives its row in the padded output.

    Args:
        cls_maps, box_maps, anchors, image_sizes: as ``Postprocess.__call__``;
            ``image_sizes`` may be (1, 2) for a batch of equal sizes.

    Returns:
        boxes (B, D, 4), scores (B, D), labels (B, D) (-1 in padding), num_dets (B,),
        and extra fields (B, D, ...) (``spread``), D = ``postprocess.max_det``.
    """
    boxes, scores, labels, keep, extra = postprocess.candidates(
        cls_maps, box_maps, anchors, image_sizes
    )  # (B, L, 4), (B, L), (B, L), (B, L)
    b, num_cand = scores.shape
    max_det = postprocess.max_det
    num_classes = Postprocess.num_classes(cls_maps, anchors)
    idx = keep.flatten().nonzero().squeeze(1)  # (P,) into B*L
    img = torch.div(idx, num_cand, rounding_mode="floor")  # (P,)
    cand_boxes = boxes.flatten(0, 1)[idx].float()  # (P, 4)
    cand_scores = scores.flatten()[idx]  # (P,)
    cand_labels = labels.flatten()[idx]  # (P,)
    # offset_nms, without its Python branch for empty inputs: boxes are clipped (>= 0)
    offset = torch.cat([cand_boxes.flatten(), cand_boxes.new_zeros(1)]).max() + 1
    groups = (img * num_classes + cand_labels).to(cand_boxes)  # (P,)
    kept = nms(cand_boxes + (groups * offset)[:, None], cand_scores, postprocess.nms_thresh)
    img_k = img[kept]  # (Q,) sorted by score
    one_hot = (img_k[:, None] == torch.arange(b, device=img.device)[None]).long()  # (Q, B)
    rank = (one_hot.cumsum(0) * one_hot).sum(1) - 1  # (Q,) place within its image
    sel = (rank < max_det).nonzero().squeeze(1)  # (S,)
    rows, cols, src = img_k[sel], rank[sel], kept[sel]
    num_dets = one_hot[sel].sum(0)  # (B,)

    def scatter(values: Tensor, fill: float) -> Tensor:
        """(P, ...) candidate values -> (B, D, ...) padded rows."""
        out = values.new_full((b, max_det, *values.shape[1:]), fill)
        return out.index_put((rows, cols), values[src])

    fields = {name: scatter(v.flatten(0, 1)[idx].float(), 0.0) for name, v in extra.items()}
    return (scatter(cand_boxes, 0.0), scatter(cand_scores, 0.0), scatter(cand_labels, -1),
            num_dets, fields)


class DetectionGraph(nn.Module):
    """uint8 images -> padded detections in their own pixels (see the module docstring).

    Args:
        detector: the network.
        postprocess: thresholds and decoder.
        anchors: per level (N_l, 4) anchors of a ``padded_size`` input.
        input_size: (h, w) the images are resized to (the eval resize target).
        padded_size: (H, W) network input, ``input_size`` rounded up to the padding
            multiple.
    """

    def __init__(
        self, detector: Detector, postprocess: Postprocess, anchors: list[Tensor],
        input_size: tuple[int, int], padded_size: tuple[int, int],
    ) -> None:
        super().__init__()
        self.detector = detector
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
        x = resize_uint8(images, (h, w))  # (B, 3, h, w)
        x = F.pad(x, (0, self.padded_size[1] - w, 0, self.padded_size[0] - h))  # (B, 3, H', W')
        cls_maps, box_maps = self.detector(x)
        anchors = [getattr(self, f"anchors_{i}") for i in range(self.num_levels)]
        boxes, scores, labels, num_dets, extra = padded_postprocess(
            self.postprocess, cls_maps, box_maps, anchors, self.image_sizes
        )
        in_hw = torch._shape_as_tensor(images)[2:].float()  # (2,) H, W of the given images
        ratio = (in_hw / self.image_sizes[0].float()).flip(0).repeat(2)  # (4,) w h w h
        outputs = (boxes * ratio, scores, labels, num_dets)
        if "spread" in extra:  # left/top/right/bottom scale by w h w h too
            outputs += (extra["spread"] * ratio,)
        return outputs
