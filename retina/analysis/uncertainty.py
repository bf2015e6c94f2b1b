"""Rank detections by box uncertainty (GFL's per-side spread) for human review."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class AmbiguousDetection(NamedTuple):
    """One detection to review; pixels as in the detections given."""

    image_id: int
    index: int  # place in that image's detections
    label: int
    box: Tensor  # (4,) x1y1x2y2
    score: float
    spread: Tensor  # (4,) std of the left, top, right, bottom sides
    uncertainty: float  # see relative_spread


def relative_spread(boxes: Tensor, spread: Tensor, min_size: float = 1.0) -> Tensor:
    """Mean per-side std relative to the box extent along that side's axis.

    (s_left / w + s_top / h + s_right / w + s_bottom / h) / 4, with w and h floored at
    ``min_size`` pixels; scale-free, so small and large boxes compare.

    Args:
        boxes: (D, 4) x1y1x2y2.
        spread: (D, 4) per-side std, same units as ``boxes``.

    Returns:
        (D,).
    """
    wh = (boxes[:, 2:] - boxes[:, :2]).clamp(min=min_size)  # (D, 2)
    return (spread / wh.repeat(1, 2)).mean(dim=1)  # sides l t r b over w h w h


def most_ambiguous(
    image_ids: list[int],
    detections: list[dict[str, Tensor]],
    k: int | None = 20,
    min_score: float = 0.3,
) -> list[AmbiguousDetection]:
    """The ``k`` detections with the most uncertain boxes over a list of images (all of them
    scoring >= ``min_score``, most uncertain first, when ``k`` is None).

    Args:
        image_ids: id of each image.
        detections: per image ``boxes`` (D, 4), ``scores`` (D,), ``labels`` (D,) and
            ``spread`` (D, 4), as returned by ``Postprocess`` with a ``DistanceCoder``.
        k: how many to return (None: all that score >= ``min_score``).
        min_score: only detections scoring at least this (low scores are uncertain anyway).

    Returns:
        up to ``k`` detections, most uncertain (by :func:`relative_spread`) first.
    """
    if len(image_ids) != len(detections):
        raise ValueError(f"{len(image_ids)} image ids for {len(detections)} detection lists")
    if not detections:
        return []
    if any("spread" not in d for d in detections):
        raise ValueError("detections carry no 'spread': use a model whose coder has one (GFL)")
    counts = torch.tensor([len(d["scores"]) for d in detections], dtype=torch.long)
    ids = torch.repeat_interleave(torch.tensor(image_ids, dtype=torch.long), counts)  # (D,)
    starts = torch.repeat_interleave(counts.cumsum(0) - counts, counts)  # (D,)
    index = torch.arange(len(ids)) - starts  # (D,) place within its image
    boxes = torch.cat([d["boxes"].detach().float().cpu() for d in detections])  # (D, 4)
    spread = torch.cat([d["spread"].detach().float().cpu() for d in detections])  # (D, 4)
    scores = torch.cat([d["scores"].detach().float().cpu() for d in detections])  # (D,)
    labels = torch.cat([d["labels"].detach().cpu() for d in detections])  # (D,)
    uncertainty = relative_spread(boxes, spread).masked_fill(scores < min_score, -1.0)
    passing = int((scores >= min_score).sum())
    top = uncertainty.topk(passing if k is None else min(k, passing)).indices
    return [
        AmbiguousDetection(int(ids[i]), int(index[i]), int(labels[i]), boxes[i], float(scores[i]),
                           spread[i], float(uncertainty[i]))
        for i in top.tolist()
    ]


def average_ranks(x: Tensor) -> Tensor:
    """1-based ranks of ``x`` (n,), ties sharing the mean of their ranks (float64, (n,))."""
    order = x.argsort(stable=True)
    _, counts = torch.unique_consecutive(x[order], return_counts=True)
    ends = counts.cumsum(0).double()  # (groups,) last rank of each run of equal values
    ranks = torch.empty(len(x), dtype=torch.float64)
    ranks[order] = (ends - (counts - 1) / 2).repeat_interleave(counts)  # mean of first..last
    return ranks


def spearman(x: Tensor, y: Tensor) -> float:
    """Spearman's rank correlation of paired samples ``x``, ``y`` (n,): the Pearson correlation
    of their :func:`average_ranks`; NaN for fewer than 2 pairs or a constant side."""
    if len(x) != len(y):
        raise ValueError(f"{len(x)} values against {len(y)}")
    if len(x) < 2:
        return float("nan")
    rx, ry = average_ranks(x), average_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = ((rx * rx).sum() * (ry * ry).sum()).sqrt()
    return float((rx * ry).sum() / denom) if denom > 0 else float("nan")
