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
