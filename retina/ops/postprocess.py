"""From raw head outputs to detections: threshold, top-k, decode, clip, class-wise NMS.

Batched over images and levels, the class maps read in the head's layout (no copy); one
exact class-wise NMS for the whole batch (:func:`nms_rank`, used by training, the predictor
and the exported graphs alike), no Python loop over images or classes (eager, a loop over
buckets of a few hundred boxes: :func:`per_group_nms`).
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
from torch import Tensor
from torchvision.ops import nms

from retina.ops.levels import flatten_levels


class BoxCoder(Protocol):
    """Decodes box outputs; a coder that also has ``spread(box_reg, anchors) -> (..., 4)``
    (per-side standard deviation in pixels, e.g. ``DistanceCoder``) adds ``spread`` to
    every detection."""

    def decode(self, box_reg: Tensor, anchors: Tensor) -> Tensor:
        """(..., C) box outputs and (..., 4) anchors -> (..., 4) boxes."""
        ...


def group_cells(boxes: Tensor, groups: Tensor, num_groups: int) -> Tensor:
    """(P, 4) float64 shift that puts each group of boxes in its own cell of a grid.

    Group ``g`` (in 0..num_groups-1) goes to cell ``(g mod n, g div n)``, ``n =
    ceil(sqrt(num_groups))``, cells ``step`` px apart, ``step`` a whole number above every
    coordinate: boxes of different groups never overlap. Whole-pixel shifts in float64 are
    exact: a float32 coordinate (24 bits) plus a shift under ``2^T`` px fits in float64's 53
    bits when the coordinate is 0 or at least ``2^(T - 30)`` px (16 images x 80 classes at
    1333 px: ``n = 36``, shifts under 2^16 px, every coordinate 0 or >= 2^-14 px). A grid,
    not a row of cells, keeps the shifts about sqrt(num_groups) times smaller.
    """
    side = math.isqrt(max(num_groups, 1) - 1) + 1  # n; any n separates the groups
    step = torch.cat([boxes.flatten(), boxes.new_zeros(1)]).double().max().floor() + 1
    cell = torch.stack([groups % side, torch.div(groups, side, rounding_mode="floor")], 1)
    return cell.repeat(1, 2).double() * step  # (P, 4) x y x y


def rank_in_image(image: Tensor, batch: int) -> Tensor:
    """(Q,) image of each kept box, in score order -> its place among its image's (0: best)."""
    one_hot = (image[:, None] == torch.arange(batch, device=image.device)).long()  # (Q, B)
    return (one_hot.cumsum(0) * one_hot).sum(1) - 1  # (Q,)


def nms_rank(
    boxes: Tensor, scores: Tensor, image: Tensor, labels: Tensor, num_classes: int,
    iou_threshold: float, batch: int,
) -> tuple[Tensor, Tensor]:
    """Class-wise NMS within each image, exact, and the rank of each kept box within its
    image. Traceable: no data-dependent Python while tracing (TorchScript graphs use it; ONNX
    graphs use :func:`onnx_nms`, the same rule).

    Exact: the kept set is that of ``torchvision.ops.nms`` run on each (image, class) group
    alone in float64. Eager, it is run that way (:func:`per_group_nms`); traced, in a single
    ``nms`` call on boxes shifted per group in float64 (:func:`group_cells`), where the shift
    loses no bit, so the IoU of two boxes of one group is computed from the same numbers as
    unshifted. On the float32 boxes, per-group ``nms`` keeps the same set but for pairs whose
    IoU is within float32 rounding (about 1e-7) of the threshold. Shifting in float32 instead
    (``batched_nms``, mmcv) rounds coordinates to 2^-7 px at 80 classes x 1334 px and flips
    decisions near the threshold.

    Args:
        boxes: (P, 4) float x1y1x2y2, >= 0.
        scores: (P,).
        image: (P,) long image of each box, in 0..batch-1.
        labels: (P,) long class in 0..num_classes-1.
        num_classes: K.
        iou_threshold: IoU above which the lower-scoring box of a group is dropped.
        batch: number of images B.

    Returns:
        ``kept`` (Q,) indices of the kept boxes by decreasing score, and ``rank`` (Q,) the
        place of each among the kept boxes of its image (0: its best).
    """
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        # one call: nms compares every box with every kept one, groups or not (quadratic)
        groups = image * num_classes + labels  # (P,)
        shifted = boxes.double() + group_cells(boxes, groups, batch * num_classes)
        kept = nms(shifted, scores.double(), iou_threshold)  # (Q,)
    else:
        kept = per_group_nms(boxes, scores, image * num_classes + labels, iou_threshold)
    return kept, rank_in_image(image[kept], batch)


def per_group_nms(
    boxes: Tensor, scores: Tensor, groups: Tensor, iou_threshold: float, bucket: int = 256
) -> Tensor:
    """``torchvision.ops.nms`` of each group alone, in float64: (P, 4) boxes, (P,) scores and
    groups -> (Q,) indices of the kept boxes by decreasing score.

    ``nms`` compares each kept box with every later one, so one call on all groups costs P^2;
    a call per group costs its overhead many times. Here groups are packed in order into
    buckets of about ``bucket`` boxes (a group starting in a bucket stays whole in it), and
    each bucket is one call on its boxes shifted per group (:func:`group_cells`, exact).
    """
    if len(groups) == 0:
        return groups.new_zeros(0)
    order = groups.argsort(stable=True)  # (P,) grouped
    counts = torch.unique_consecutive(groups[order], return_counts=True)[1]  # (G,)
    starts = counts.cumsum(0) - counts  # (G,) first box of each group
    which = torch.div(starts, bucket, rounding_mode="floor")  # (G,) bucket of each group
    local = torch.arange(len(counts), device=groups.device) - torch.searchsorted(which, which)
    grouped = boxes[order]  # (P, 4)
    shift = group_cells(grouped, local.repeat_interleave(counts), int(local.max()) + 1)
    shifted, grouped_scores = grouped.double() + shift, scores[order].double()
    sizes = counts.new_zeros(int(which[-1]) + 1).index_add_(0, which, counts)  # boxes per bucket
    kept, start = [], 0
    for n in sizes[sizes > 0].tolist():
        part = slice(start, start + n)
        kept.append(start + nms(shifted[part], grouped_scores[part], iou_threshold))
        start += n
    kept = order[torch.cat(kept)]  # (Q,)
    return kept[scores[kept].sort(descending=True, stable=True).indices]


class _MultiClassNMS(torch.autograd.Function):
    """ONNX NonMaxSuppression over images and classes: boxes (B, L, 4) and scores (B, K, L)
    (-1: not a candidate of that class) -> selected (Q, 3) rows (image, class, box)."""

    @staticmethod
    def forward(ctx, boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
        b, k, idx = (scores > -0.5).nonzero(as_tuple=True)  # (P,) each
        kept, _ = nms_rank(boxes[b, idx], scores[b, k, idx], b, k, scores.shape[1],
                           iou_threshold, len(boxes))
        return torch.stack([b, k, idx], 1)[kept]  # what the ONNX op selects, in another order

    @staticmethod
    def symbolic(g, boxes, scores, iou_threshold: float):
        most = g.op("Constant", value_t=torch.tensor([2**31 - 1]))  # per image and class
        iou = g.op("Constant", value_t=torch.tensor([iou_threshold], dtype=torch.float32))
        floor = g.op("Constant", value_t=torch.tensor([-0.5], dtype=torch.float32))
        return g.op("NonMaxSuppression", boxes, scores, most, iou, floor)


def padded_nms_rank(
    boxes: Tensor, scores: Tensor, labels: Tensor, keep: Tensor, num_classes: int,
    iou_threshold: float,
) -> tuple[Tensor, Tensor]:
    """:func:`nms_rank` of fixed-size candidates (exported graphs).

    In an ONNX export, ONNX's NonMaxSuppression instead (:func:`onnx_nms`): it takes float32
    only, where a shift would round, but it runs per image and class itself.

    Args:
        boxes: (B, L, 4) float32 x1y1x2y2, >= 0.
        scores: (B, L) in [0, 1].
        labels: (B, L) long class in 0..num_classes-1.
        keep: (B, L) bool, the candidates to consider.
        num_classes: K.
        iou_threshold: IoU above which the lower-scoring box of a group is dropped.

    Returns:
        ``kept`` (Q,) indices into B*L of the kept boxes by decreasing score, and ``rank``
        (Q,) the place of each among the kept boxes of its image.
    """
    b, num_cand = scores.shape
    if torch.onnx.is_in_onnx_export():
        kept = onnx_nms(boxes, scores, labels, keep, num_classes, iou_threshold)
        return kept, rank_in_image(torch.div(kept, num_cand, rounding_mode="floor"), b)
    idx = keep.flatten().nonzero().squeeze(1)  # (P,) into B*L
    img = torch.div(idx, num_cand, rounding_mode="floor")  # (P,)
    kept, rank = nms_rank(boxes.flatten(0, 1)[idx], scores.flatten()[idx], img,
                          labels.flatten()[idx], num_classes, iou_threshold, b)
    return idx[kept], rank


def onnx_nms(
    boxes: Tensor, scores: Tensor, labels: Tensor, keep: Tensor, num_classes: int,
    iou_threshold: float,
) -> Tensor:
    """ONNX NonMaxSuppression per image and class (no shift): the arguments of
    :func:`padded_nms_rank` -> (Q,) indices into B*L of the kept boxes by decreasing score."""
    classes = torch.arange(num_classes, device=labels.device)[None, :, None]  # (1, K, 1)
    mine = (labels[:, None, :] == classes) & keep[:, None, :]  # (B, K, L)
    dense = torch.where(mine, scores[:, None, :], -1.0)  # (B, K, L)
    sel = _MultiClassNMS.apply(boxes, dense, iou_threshold)  # (Q, 3)
    flat = sel[:, 0] * boxes.shape[1] + sel[:, 2]  # (Q,)
    return flat[scores.flatten()[flat].argsort(descending=True)]


def clip_boxes(boxes: Tensor, sizes: Tensor) -> Tensor:
    """(..., 4) x1y1x2y2 clipped to (..., 2) (H, W) image sizes (broadcast)."""
    hw = sizes.to(boxes)
    x = boxes[..., 0::2].clamp(min=0).minimum(hw[..., 1:2])  # (..., 2)
    y = boxes[..., 1::2].clamp(min=0).minimum(hw[..., 0:1])
    return torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], dim=-1)


def level_shapes(cls_map: Tensor, box_map: Tensor, anchors: Tensor) -> tuple[int, int]:
    """(K, C): classes and box channels per anchor, from one level's maps and anchors."""
    _, cls_ch, h, w = cls_map.shape
    per_loc = anchors.shape[0] // (h * w)  # anchors per location
    return cls_ch // per_loc, box_map.shape[1] // per_loc


def top_per_image(img: Tensor, idx: Tensor, scores: Tensor, batch: int, k: int):
    """The ``k`` best of each image's survivors, by a top-k over a padded (B, most) table.

    Args:
        img: (P,) image of each survivor, grouped (non-decreasing).
        idx: (P,) index of each survivor in its image's row.
        scores: (P,) their scores.

    Returns:
        ``img``, ``idx``, ``scores`` of the kept survivors.
    """
    counts = torch.bincount(img, minlength=batch)  # (B,)
    starts = counts.cumsum(0) - counts
    col = torch.arange(len(img), device=img.device) - starts[img]  # (P,) place in its row
    table = scores.new_full((batch, int(counts.max())), -math.inf)
    table[img, col] = scores
    top, j = table.topk(min(k, table.shape[1]), dim=1)  # (B, k)
    pos = (starts[:, None] + j)[top > -math.inf]  # survivors' positions; padding is -inf
    return img[pos], idx[pos], scores[pos]


class Postprocess:
    """Detections from per-level outputs.

    Per level and image: keep scores > ``score_thresh``, at most ``topk`` of them by
    score (compared on logits, before the sigmoid), decode, clip to the image. Then
    class-wise NMS at ``nms_thresh`` and the best ``max_det`` per image. Classes and
    box channels per anchor are read from the maps.

    Args:
        coder: its ``decode`` maps selected box outputs and their anchors to boxes.
        score_thresh: minimum score (0 keeps every candidate).
        topk: candidates per level and image.
        nms_thresh: IoU threshold of class-wise NMS.
        max_det: detections per image.
    """

    def __init__(
        self,
        coder: BoxCoder,
        score_thresh: float = 0.05,
        topk: int = 1000,
        nms_thresh: float = 0.5,
        max_det: int = 100,
    ) -> None:
        self.coder = coder
        self.score_thresh = score_thresh
        self.topk = topk
        self.nms_thresh = nms_thresh
        self.max_det = max_det

    @property
    def logit_thresh(self) -> float:
        """The score threshold as a logit (-inf for 0)."""
        p = self.score_thresh
        return -math.inf if p <= 0 else math.log(p / (1 - p))

    @staticmethod
    def num_classes(cls_maps: list[Tensor], anchors: list[Tensor]) -> int:
        """K from the first level: channels / anchors per location."""
        _, channels, h, w = cls_maps[0].shape
        return channels // (anchors[0].shape[0] // (h * w))

    def _decode(self, box: Tensor, anchors: Tensor, sizes: Tensor) -> dict[str, Tensor]:
        """(..., C) box outputs, (..., 4) anchors, (..., 2) sizes -> boxes (and spread)."""
        out = {"boxes": clip_boxes(self.coder.decode(box, anchors), sizes)}
        if hasattr(self.coder, "spread"):
            out["spread"] = self.coder.spread(box, anchors)
        return out

    def candidates(
        self, cls_maps: list[Tensor], box_maps: list[Tensor], anchors: list[Tensor],
        image_sizes: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, dict[str, Tensor]]:
        """The top-k per level and image, fixed size (for exported graphs).

        Returns:
            boxes (B, L, 4), scores (B, L), labels (B, L), keep (B, L) bool, with L the
            candidates over all levels; ``keep`` marks those above the threshold. Last,
            extra per-candidate fields (B, L, ...): ``spread`` if the coder has one.
        """
        parts: list[dict[str, Tensor]] = []
        for c_map, b_map, anc in zip(cls_maps, box_maps, anchors):
            k_cls, c_box = level_shapes(c_map, b_map, anc)
            logits = flatten_levels([c_map], k_cls).flatten(1)  # (B, N*K)
            box = flatten_levels([b_map], c_box)  # (B, N, C)
            top, idx = logits.topk(min(self.topk, logits.shape[1]), dim=1)  # (B, k)
            a_idx = idx // k_cls
            sel = box.gather(1, a_idx[..., None].expand(-1, -1, c_box))  # (B, k, C)
            part = self._decode(sel, anc[a_idx], image_sizes[:, None])
            parts.append({**part, "logits": top, "labels": idx % k_cls})
        cat = {name: torch.cat([p[name] for p in parts], dim=1) for name in parts[0]}
        logits = cat.pop("logits")
        boxes, labels = cat.pop("boxes"), cat.pop("labels")
        return boxes, logits.float().sigmoid(), labels, logits > self.logit_thresh, cat

    def _level_survivors(
        self, c_map: Tensor, k_cls: int
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """One level's survivors, read in the head's layout (no copy of the class map).

        Only the locations where some class passes the threshold (a max over classes) are
        looked at class by class; when more than half of some image's locations pass, the
        top-k of every image is taken over all its logits instead (the same set, cheaper).

        Args:
            c_map: (B, A*K, H, W) class logits.
            k_cls: K.

        Returns:
            ``image``, ``anchor`` (in 0..A-1), ``position`` (in 0..HW-1), ``label`` and
            ``logit`` of each of the P survivors, (P,) each, grouped by image.
        """
        b, ch, h, w = c_map.shape
        per_loc = ch // k_cls  # A
        thresh = self.logit_thresh
        logits = c_map.view(b, per_loc, k_cls, h * w)  # (B, A, K, HW)
        passes = logits.amax(2) > thresh  # (B, A, HW)
        if 2 * int(passes.flatten(1).sum(1).max()) > per_loc * h * w:
            top, flat = c_map.flatten(1).topk(min(self.topk, ch * h * w), dim=1)  # (B, k)
            keep = top > thresh
            img = torch.arange(b, device=flat.device)[:, None].expand_as(flat)[keep]
            flat, top = flat[keep], top[keep]  # (P,) into (A, K, HW)
            anchor, label = flat // (k_cls * h * w), flat // (h * w) % k_cls
            pos = flat % (h * w)
        else:
            img, anchor, pos = passes.nonzero(as_tuple=True)  # (L,) grouped by image
            row, label = (logits[img, anchor, :, pos] > thresh).nonzero(as_tuple=True)  # (P,)
            img, anchor, pos = img[row], anchor[row], pos[row]
            top = logits[img, anchor, label, pos]
            if int(torch.bincount(img, minlength=b).max()) > self.topk:
                key = (pos * per_loc + anchor) * k_cls + label  # (P,) place in (HW A K)
                img, key, top = top_per_image(img, key, top, b, self.topk)
                anchor, label, pos = key // k_cls % per_loc, key % k_cls, key // (k_cls * per_loc)
        return img, anchor, pos, label, top

    def survivors(
        self, cls_maps: list[Tensor], box_maps: list[Tensor], anchors: list[Tensor],
        image_sizes: Tensor,
    ) -> dict[str, Tensor]:
        """Candidates above the threshold, at most ``topk`` per level and image.

        Thresholding first makes the typical case (few scores above the threshold)
        cheap; a level where some image has more than ``topk`` survivors takes the
        top-k of every image and thresholds those (the same set).

        Returns:
            flat fields over the P survivors of the batch: ``image`` (P,), ``boxes``
            (P, 4), ``scores`` (P,), ``labels`` (P,), and ``spread`` (P, 4) if the
            coder has one.
        """
        parts: list[dict[str, Tensor]] = []
        for c_map, b_map, anc in zip(cls_maps, box_maps, anchors):
            k_cls, c_box = level_shapes(c_map, b_map, anc)
            img, anchor, pos, labels, top = self._level_survivors(c_map, k_cls)
            per_loc = c_map.shape[1] // k_cls  # A
            sel = b_map.view(len(b_map), per_loc, c_box, -1)[img, anchor, :, pos]  # (P, C)
            part = self._decode(sel, anc[pos * per_loc + anchor], image_sizes[img])
            parts.append({**part, "image": img, "scores": top.float().sigmoid(),
                          "labels": labels})
        return {name: torch.cat([p[name] for p in parts]) for name in parts[0]}

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
        cand = self.survivors(cls_maps, box_maps, anchors, image_sizes)
        img, labels, b = cand.pop("image"), cand["labels"], image_sizes.shape[0]
        kept, rank = nms_rank(cand["boxes"], cand["scores"], img, labels,
                              self.num_classes(cls_maps, anchors), self.nms_thresh, b)
        kept = kept[rank < self.max_det]  # by score; a stable sort by image keeps that order
        kept = kept[torch.sort(img[kept], stable=True).indices]
        splits = torch.bincount(img[kept], minlength=b).tolist()
        per_field = {name: v[kept].split(splits) for name, v in cand.items()}
        return [dict(zip(per_field, values)) for values in zip(*per_field.values())]

    def padded(
        self, cls_maps: list[Tensor], box_maps: list[Tensor], anchors: list[Tensor],
        image_sizes: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, dict[str, Tensor]]:
        """Detections as fixed-size tensors, with no data-dependent Python (exported graphs).

        The same candidates (:meth:`candidates`) and the same NMS (:func:`padded_nms_rank`);
        instead of splitting per image, each kept detection's rank within its image gives
        its row.

        Args:
            cls_maps, box_maps, anchors, image_sizes: as :meth:`__call__`; ``image_sizes``
                may be (1, 2) for a batch of equal sizes.

        Returns:
            boxes (B, D, 4), scores (B, D), labels (B, D) (-1 in padding), num_dets (B,),
            and extra fields (B, D, ...) (``spread``), D = ``max_det``.
        """
        boxes, scores, labels, keep, extra = self.candidates(
            cls_maps, box_maps, anchors, image_sizes
        )  # (B, L, 4), (B, L), (B, L), (B, L)
        b, num_cand = scores.shape
        boxes = boxes.float()
        kept, rank = padded_nms_rank(boxes, scores, labels, keep,
                                     self.num_classes(cls_maps, anchors), self.nms_thresh)
        sel = (rank < self.max_det).nonzero().squeeze(1)  # (S,)
        src, cols = kept[sel], rank[sel]
        rows = torch.div(src, num_cand, rounding_mode="floor")
        num_dets = (rows[:, None] == torch.arange(b, device=rows.device)).long().sum(0)  # (B,)

        def scatter(values: Tensor, fill: float) -> Tensor:
            """(B, L, ...) candidate values -> (B, D, ...) padded rows."""
            flat = values.flatten(0, 1)  # (B*L, ...)
            out = flat.new_full((b, self.max_det, *flat.shape[1:]), fill)
            return out.index_put((rows, cols), flat[src])

        fields = {name: scatter(v.float(), 0.0) for name, v in extra.items()}
        return (scatter(boxes, 0.0), scatter(scores, 0.0), scatter(labels, -1), num_dets, fields)
