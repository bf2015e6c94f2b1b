"""Box maths as pure tensor functions. Boxes are x1y1x2y2 in pixels."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

# dw, dh above this would make boxes over 1000 / 16 times the anchor: clamp before exp.
DELTA_CLAMP = math.log(1000.0 / 16)


def encode_deltas(
    boxes: Tensor, anchors: Tensor, weights: tuple[float, float, float, float] = (1, 1, 1, 1)
) -> Tensor:
    """Regression targets (dx, dy, dw, dh) that turn ``anchors`` into ``boxes``.

    dx = wx * (x_b - x_a) / w_a, dy likewise, dw = ww * log(w_b / w_a), dh likewise,
    with (x, y) box centres.

    Args:
        boxes: (..., 4) target boxes.
        anchors: (..., 4) anchors, broadcastable to ``boxes``.
        weights: (wx, wy, ww, wh).

    Returns:
        (..., 4) deltas.
    """
    wx, wy, ww, wh = weights
    aw = anchors[..., 2] - anchors[..., 0]
    ah = anchors[..., 3] - anchors[..., 1]
    ax = anchors[..., 0] + 0.5 * aw
    ay = anchors[..., 1] + 0.5 * ah
    bw = boxes[..., 2] - boxes[..., 0]
    bh = boxes[..., 3] - boxes[..., 1]
    bx = boxes[..., 0] + 0.5 * bw
    by = boxes[..., 1] + 0.5 * bh
    return torch.stack(
        [
            wx * (bx - ax) / aw,
            wy * (by - ay) / ah,
            ww * torch.log(bw / aw),
            wh * torch.log(bh / ah),
        ],
        dim=-1,
    )


def decode_deltas(
    deltas: Tensor,
    anchors: Tensor,
    weights: tuple[float, float, float, float] = (1, 1, 1, 1),
    clamp: float = DELTA_CLAMP,
) -> Tensor:
    """Inverse of :func:`encode_deltas`; dw, dh are clamped at ``clamp`` before exp.

    Args:
        deltas: (..., 4) (dx, dy, dw, dh).
        anchors: (..., 4), broadcastable to ``deltas``.

    Returns:
        (..., 4) boxes x1y1x2y2, in the dtype of ``deltas`` promoted with ``anchors``.
    """
    wx, wy, ww, wh = weights
    deltas = deltas.to(torch.promote_types(deltas.dtype, anchors.dtype))
    aw = anchors[..., 2] - anchors[..., 0]
    ah = anchors[..., 3] - anchors[..., 1]
    ax = anchors[..., 0] + 0.5 * aw
    ay = anchors[..., 1] + 0.5 * ah
    cx = deltas[..., 0] / wx * aw + ax
    cy = deltas[..., 1] / wy * ah + ay
    w = torch.exp((deltas[..., 2] / ww).clamp(max=clamp)) * aw
    h = torch.exp((deltas[..., 3] / wh).clamp(max=clamp)) * ah
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


@dataclass(frozen=True)
class DeltaCoder:
    """RetinaNet's box coder: holds only its settings; see :func:`encode_deltas`."""

    weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    clamp: float = DELTA_CLAMP

    def encode(self, boxes: Tensor, anchors: Tensor) -> Tensor:
        return encode_deltas(boxes, anchors, self.weights)

    def decode(self, deltas: Tensor, anchors: Tensor) -> Tensor:
        return decode_deltas(deltas, anchors, self.weights, self.clamp)


def paired_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU of corresponding boxes (elementwise, not all pairs like ``box_iou``).

    Args:
        boxes1: (..., 4).
        boxes2: (..., 4), broadcastable to ``boxes1``.

    Returns:
        (...) IoU in [0, 1]; 0 where the union is empty.
    """
    lt = torch.maximum(boxes1[..., :2], boxes2[..., :2])
    rb = torch.minimum(boxes1[..., 2:], boxes2[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=-1)
    area1 = (boxes1[..., 2:] - boxes1[..., :2]).clamp(min=0).prod(dim=-1)
    area2 = (boxes2[..., 2:] - boxes2[..., :2]).clamp(min=0).prod(dim=-1)
    union = area1 + area2 - inter
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(union.dtype).tiny), 0.0)


def integral(logits: Tensor) -> Tensor:
    """Expectation of a discrete distribution over the bins 0..R.

    Args:
        logits: (..., R+1) unnormalised log-probabilities of the bins.

    Returns:
        (...) float32 sum_i i * softmax(logits)_i, in [0, R].
    """
    probs = logits.float().softmax(dim=-1)
    bins = torch.arange(probs.shape[-1], dtype=probs.dtype, device=probs.device)  # (R+1,)
    return (probs * bins).sum(dim=-1)


def integral_std(logits: Tensor) -> Tensor:
    """Standard deviation of the same distribution as :func:`integral`, in bins.

    Args:
        logits: (..., R+1).

    Returns:
        (...) float32 sqrt(sum_i p_i (i - mean)^2), in [0, R / 2].
    """
    probs = logits.float().softmax(dim=-1)
    bins = torch.arange(probs.shape[-1], dtype=probs.dtype, device=probs.device)  # (R+1,)
    mean = (probs * bins).sum(dim=-1, keepdim=True)
    return (probs * (bins - mean).square()).sum(dim=-1).sqrt()


def anchor_points(anchors: Tensor, anchor_scale: float) -> tuple[Tensor, Tensor]:
    """Centres and strides of square anchors of side ``anchor_scale * stride``.

    Args:
        anchors: (..., 4) x1y1x2y2.

    Returns:
        points (..., 2) xy centres, strides (...) anchor width / anchor_scale.
    """
    points = (anchors[..., :2] + anchors[..., 2:]) / 2
    strides = (anchors[..., 2] - anchors[..., 0]) / anchor_scale
    return points, strides


def distances_to_boxes(points: Tensor, distances: Tensor) -> Tensor:
    """Boxes from a point and its distances to the four sides.

    Args:
        points: (..., 2) xy.
        distances: (..., 4) left, top, right, bottom (same units as ``points``).

    Returns:
        (..., 4) x1y1x2y2.
    """
    return torch.cat([points - distances[..., :2], points + distances[..., 2:]], dim=-1)


def boxes_to_distances(points: Tensor, boxes: Tensor) -> Tensor:
    """Inverse of :func:`distances_to_boxes`: (..., 2) points, (..., 4) boxes -> (..., 4) ltrb."""
    return torch.cat([points - boxes[..., :2], boxes[..., 2:] - points], dim=-1)


@dataclass(frozen=True)
class DistanceCoder:
    """GFL's box coder: a distribution over 0..reg_max per side, in units of the stride.

    The box outputs of one location are (..., 4 * (reg_max + 1)): the R+1 bin logits of
    the left, top, right and bottom distances, one side after the other. Anchors are the
    squares of side ``anchor_scale * stride`` made by ``AnchorGenerator(anchor_scale,
    scales_per_octave=1, ratios=(1.0,))``: the point is the anchor centre and the stride
    its width / ``anchor_scale``. Holds only its settings; see :func:`integral`.

    Args:
        reg_max: R, the largest distance in strides (R+1 bins 0..R).
        anchor_scale: anchor side in strides (``AnchorGenerator.anchor_scale``).
    """

    reg_max: int = 16
    anchor_scale: float = 8.0

    def _sides(self, box_reg: Tensor) -> Tensor:
        """(..., 4 * (R+1)) -> (..., 4, R+1)."""
        return box_reg.unflatten(-1, (4, self.reg_max + 1))

    def decode(self, box_reg: Tensor, anchors: Tensor) -> Tensor:
        """(..., 4 * (R+1)) logits, (..., 4) anchors -> (..., 4) float32 boxes x1y1x2y2."""
        points, strides = anchor_points(anchors.float(), self.anchor_scale)
        distances = integral(self._sides(box_reg)) * strides[..., None]  # (..., 4) pixels
        return distances_to_boxes(points, distances)

    def encode(self, boxes: Tensor, anchors: Tensor) -> Tensor:
        """(..., 4) boxes, (..., 4) anchors -> (..., 4) ltrb distances in strides.

        Clamped to [0, reg_max - 0.01] so that the upper bin of every target exists.
        """
        points, strides = anchor_points(anchors.float(), self.anchor_scale)
        distances = boxes_to_distances(points, boxes.float()) / strides[..., None]
        return distances.clamp(min=0, max=self.reg_max - 0.01)

    def spread(self, box_reg: Tensor, anchors: Tensor) -> Tensor:
        """(..., 4 * (R+1)) logits, (..., 4) anchors -> (..., 4) per-side std in pixels."""
        strides = anchor_points(anchors.float(), self.anchor_scale)[1]
        return integral_std(self._sides(box_reg)) * strides[..., None]
