"""From raw head outputs to detections: top-k, decode, clip, class-wise NMS.

Batched over images and levels: one NMS call for the whole batch, no Python loop
over images or classes.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
from torch import Tensor
from torchvision.ops import nms

from retina.model.head import flatten_levels


class BoxCoder(Protocol):
    """Decodes box outputs; a coder that also has ``spread(box_reg, anchors) -> (B, k, 4)``
    (per-side standard deviation in pixels, e.g. ``DistanceCoder``) adds ``spread`` to
    every detection."""

    def decode(self, box_reg: Tensor, anchors: Tensor) -> Tensor:
        """(B, k, C) box outputs and (B, k, 4) anchors -> (B, k, 4) boxes."""
        ...


def offset_nms(boxes: Tensor, scores: Tensor, groups: Tensor, iou_threshold: float) -> Tensor:
    """NMS within groups in a single call, by shifting each group to its own region.

    torchvision's ``batched_nms`` does the same trick but switches to a Python loop
    over groups on CPU for large inputs; this always makes one ``nms`` call.

    Returns:
        indices of kept boxes, sorted by decreasing score.
    """
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    offsets = groups.to(boxes) * (boxes.max() + 1)
    return nms(boxes + offsets[:, None], scores, iou_threshold)


class Postprocess:
    """Detections from per-level outputs.

    Per level and image: keep scores > ``score_thresh``, at most ``topk`` by score
    (selected on logits, before the sigmoid), decode, clip to the image. Then
    class-wise NMS at ``nms_thresh`` and the best ``max_det`` per image.

    Args:
        coder: its ``decode`` maps selected box outputs and their anchors to boxes.
        box_dim: channels per anchor in the box maps (4 for deltas).
        score_thresh: minimum score.
        topk: candidates per level and image.
        nms_thresh: IoU threshold of class-wise NMS.
        max_det: detections per image.
    """

    def __init__(
        self,
        coder: BoxCoder,
        box_dim: int = 4,
        score_thresh: float = 0.05,
        topk: int = 1000,
        nms_thresh: float = 0.5,
        max_det: int = 100,
    ) -> None:
        self.coder = coder
        self.box_dim = box_dim
        self.score_thresh = score_thresh
        self.topk = topk
        self.nms_thresh = nms_thresh
        self.max_det = max_det

    @staticmethod
    def num_classes(cls_maps: list[Tensor], anchors: list[Tensor]) -> int:
        """K from the first level: channels / anchors per location."""
        _, channels, h, w = cls_maps[0].shape
        return channels // (anchors[0].shape[0] // (h * w))

    def candidates(
        self, cls_maps: list[Tensor], box_maps: list[Tensor], anchors: list[Tensor],
        image_sizes: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, dict[str, Tensor]]:
        """Top-k per level, decoded and clipped.

        Returns:
            boxes (B, L, 4), scores (B, L), labels (B, L), keep (B, L) bool, with L the
            candidates over all levels; ``keep`` marks those above the threshold. Last,
            extra per-candidate fields (B, L, ...): ``spread`` if the coder has one.
        """
        num_classes = self.num_classes(cls_maps, anchors)
        thresh = math.log(self.score_thresh / (1 - self.score_thresh))  # logit of the threshold
        with_spread = hasattr(self.coder, "spread")
        out_boxes, out_logits, out_labels, out_spread = [], [], [], []
        for c_map, b_map, anc in zip(cls_maps, box_maps, anchors):
            logits = flatten_levels([c_map], num_classes).flatten(1)  # (B, HWA*K)
            box = flatten_levels([b_map], self.box_dim)  # (B, HWA, C)
            k = min(self.topk, logits.shape[1])
            top, idx = logits.topk(k, dim=1)  # (B, k)
            a_idx = idx // num_classes
            sel = box.gather(1, a_idx[..., None].expand(-1, -1, self.box_dim))  # (B, k, C)
            out_boxes.append(self.coder.decode(sel, anc[a_idx]))  # (B, k, 4)
            if with_spread:
                out_spread.append(self.coder.spread(sel, anc[a_idx]))  # (B, k, 4)
            out_logits.append(top)
            out_labels.append(idx % num_classes)
        boxes = torch.cat(out_boxes, dim=1)  # (B, L, 4)
        logits = torch.cat(out_logits, dim=1)  # (B, L)
        h = image_sizes[:, 0, None].to(boxes)  # (B, 1)
        w = image_sizes[:, 1, None].to(boxes)
        x = boxes[..., 0::2].clamp(min=0).minimum(w[..., None])
        y = boxes[..., 1::2].clamp(min=0).minimum(h[..., None])
        boxes = torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], dim=-1)
        extra = {"spread": torch.cat(out_spread, dim=1)} if with_spread else {}  # (B, L, 4)
        return boxes, logits.float().sigmoid(), torch.cat(out_labels, dim=1), logits > thresh, extra

    def __call__(
        self, cls_maps: list[Tensor], box_maps: list[Tensor], anchors: list[Tensor],
        image_sizes: Tensor,
    ) -> list[dict[str, Tensor]]:
        """Detections per image.

        Args:
            cls_maps: per level (B, A*K, H_l, W_l) class logits.
            box_maps: per level (B, A*C, H_l, W_l) box outputs.
            anchors: per level (H_l W_l A, 4).
            image_sizes: (B, 2) (H, W) of each image before padding, for clipping.

        Returns:
            per image ``boxes`` (D, 4) x1y1x2y2, ``scores`` (D,), ``labels`` (D,) in
            0..K-1, sorted by decreasing score, D <= max_det; and ``spread`` (D, 4), the
            per-side (left, top, right, bottom) std in pixels, if the coder has ``spread``.
        """
        boxes, scores, labels, keep, extra = self.candidates(
            cls_maps, box_maps, anchors, image_sizes
        )
        b = boxes.shape[0]
        img = torch.arange(b, device=boxes.device)[:, None].expand_as(scores)[keep]  # (P,)
        boxes, scores, labels = boxes[keep].float(), scores[keep], labels[keep]
        num_classes = self.num_classes(cls_maps, anchors)
        kept = offset_nms(boxes, scores, img * num_classes + labels, self.nms_thresh)
        # kept is sorted by score; a stable sort by image keeps that order within images.
        img_k = img[kept]
        order = torch.sort(img_k, stable=True).indices
        kept, img_k = kept[order], img_k[order]
        counts = torch.bincount(img_k, minlength=b)  # (B,)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(kept.numel(), device=kept.device) - starts[img_k]
        sel = rank < self.max_det
        kept, counts = kept[sel], counts.clamp(max=self.max_det)
        dets = [
            {"boxes": bx, "scores": sc, "labels": lb}
            for bx, sc, lb in zip(
                boxes[kept].split(counts.tolist()),
                scores[kept].split(counts.tolist()),
                labels[kept].split(counts.tolist()),
            )
        ]
        for name, values in extra.items():  # gathered exactly like the boxes
            for det, part in zip(dets, values[keep][kept].split(counts.tolist())):
                det[name] = part
        return dets
