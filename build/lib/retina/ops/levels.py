"""Per-level head outputs <-> the flat anchor layout, and network-input <-> image pixels.

Heads return per level ``(B, A*C, H_l, W_l)`` maps, A anchors per location and C channels
per anchor; :func:`flatten_levels` turns them into the anchor layout ``(B, sum(H_l W_l A), C)``
that the assigners, losses and postprocess read (positions outer, anchors inner, levels
P3 first, as :mod:`retina.model.anchors` orders anchors).
"""

from __future__ import annotations

import torch
from torch import Tensor


def flatten_levels(maps: list[Tensor], channels: int) -> Tensor:
    """[(B, A*C, H_l, W_l)] -> (B, sum(H_l W_l A), C), positions outer, anchors inner."""
    out = []
    for m in maps:
        b, _, h, w = m.shape
        m = m.view(b, -1, channels, h, w)  # (B, A, C, H, W)
        out.append(m.permute(0, 3, 4, 1, 2).reshape(b, -1, channels))  # (B, HWA, C)
    return torch.cat(out, dim=1)


def foreground_logits(cls_maps: list[Tensor], num_classes: int) -> list[Tensor]:
    """Softmax maps with a background channel -> per-class logits log(p / (1 - p)).

    The sigmoid of the result is each foreground class's softmax probability, so the
    sigmoid-based postprocess and COCO evaluation work unchanged.

    Args:
        cls_maps: per level (B, A*(K+1), H_l, W_l), channel 0 of each anchor background.
        num_classes: K.

    Returns:
        per level (B, A*K, H_l, W_l).
    """
    out = []
    for m in cls_maps:
        b, _, h, w = m.shape
        logp = m.float().view(b, -1, num_classes + 1, h, w).log_softmax(dim=2)  # (B, A, K+1, H, W)
        fg = logp[:, :, 1:]  # (B, A, K, H, W) log p
        logit = fg - torch.log1p(-fg.exp().clamp(max=1 - 1e-7))  # log p - log(1 - p)
        out.append(logit.reshape(b, -1, h, w).to(m.dtype))
    return out


def scale_to_original(dets: list[dict[str, Tensor]], image_sizes: Tensor, orig_sizes: Tensor):
    """Map boxes (and per-side ``spread``, if any) from network-input pixels back to original
    image pixels, per axis."""
    ratio = (orig_sizes.float() / image_sizes.float()).flip(1).repeat(1, 2)  # (B, 4): w h w h
    in_pixels = ("boxes", "spread")  # x1y1x2y2 and left/top/right/bottom both scale by w h w h
    return [{k: v * r if k in in_pixels else v for k, v in d.items()} for d, r in zip(dets, ratio)]
