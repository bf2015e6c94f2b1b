"""Detections of overlapping windows of one scene merged into one set of boxes.

Sliced prediction runs the detector on overlapping windows and shifts each window's boxes
to scene pixels. Two things then remain:

- Seams. An object on a window border is *cut*: that window sees only part of it and
  boxes that part. A box is cut when it comes within ``margin`` pixels of an edge of its
  window that lies inside the scene (a scene border cuts nothing). :func:`resolve_seams`
  compares boxes of two overlapping windows inside the overlap of the windows (grown by
  ``margin`` where windows only touch), where both windows saw the same pixels: clipped
  to that region, the cut part and the whole object are the same box. A cut box that matches (IoU >= threshold,
  same class) a box its neighbour saw whole is dropped; cut boxes that match each other
  (an object larger than the overlap, cut by every window) are merged into their hull.
- Duplicates. An object inside an overlap is found whole by both windows: class-wise NMS
  (``torchvision.ops.batched_nms``), or score-weighted box fusion, over the boxes that lie
  in some overlap (a box seen by one window only has no duplicate from another window).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import batched_nms, box_iou

MERGES = ("nms", "fusion")


def cut_boxes(boxes: Tensor, frames: Tensor, scene_wh: tuple[int, int], margin: float) -> Tensor:
    """Which boxes touch an edge of their window that lies inside the scene.

    Args:
        boxes: (N, 4) x1y1x2y2 in scene pixels.
        frames: (N, 4) x1y1x2y2 window of each box.
        scene_wh: (W, H) of the scene.
        margin: pixels; a box this close to an inner edge is cut.

    Returns:
        (N,) bool.
    """
    w, h = scene_wh
    inner = torch.stack([frames[:, 0] > 0, frames[:, 1] > 0, frames[:, 2] < w,
                         frames[:, 3] < h], dim=1)  # (N, 4) left top right bottom inside
    near = torch.cat([boxes[:, :2] <= frames[:, :2] + margin,
                      boxes[:, 2:] >= frames[:, 2:] - margin], dim=1)  # (N, 4)
    return (inner & near).any(dim=1)


def overlapping_pairs(windows: Tensor, margin: float, chunk: int = 256) -> Tensor:
    """(P, 2) index pairs i < j of windows that overlap or come within ``margin`` pixels.

    Args:
        windows: (M, 4) x1y1x2y2.
        chunk: rows compared at once (memory is chunk x M).
    """
    pairs = []
    for start in range(0, len(windows), chunk):
        a = windows[start:start + chunk, None]  # (c, 1, 4)
        b = windows[None]  # (1, M, 4)
        close = ((a[..., :2] - margin < b[..., 2:]) & (b[..., :2] - margin < a[..., 2:])).all(-1)
        i, j = close.nonzero(as_tuple=True)  # (c, M) -> pairs
        i = i + start
        pairs.append(torch.stack([i, j], dim=1)[i < j])
    return torch.cat(pairs) if pairs else torch.zeros(0, 2, dtype=torch.long)


def clip_to(boxes: Tensor, region: Tensor) -> Tensor:
    """(N, 4) boxes clipped to one (4,) x1y1x2y2 region (empty outside it)."""
    lo, hi = region[:2].repeat(2), region[2:].repeat(2)  # (4,) x1 y1 x1 y1, x2 y2 x2 y2
    return boxes.maximum(lo).minimum(hi)


def _area(boxes: Tensor) -> Tensor:
    return (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)


class _Groups:
    """Union-find over detection indices (the cut boxes merged across seams)."""

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, i: int) -> int:
        root = self.parent.setdefault(i, i)
        while root != self.parent[root]:
            root = self.parent[root]
        while i != root:
            self.parent[i], i = root, self.parent[i]
        return root

    def union(self, i: int, j: int) -> None:
        self.parent[self.find(i)] = self.find(j)

    def groups(self) -> list[list[int]]:
        out: dict[int, list[int]] = {}
        for i in self.parent:
            out.setdefault(self.find(i), []).append(i)
        return list(out.values())


def resolve_seams(
    boxes: Tensor, scores: Tensor, labels: Tensor, window_of: Tensor, windows: Tensor,
    scene_wh: tuple[int, int], iou_thresh: float, margin: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """Drop cut boxes seen whole by a neighbour, merge the other cut boxes of one object.

    Args:
        boxes: (N, 4) x1y1x2y2 scene pixels, each inside its window.
        scores: (N,).
        labels: (N,) class of each box.
        window_of: (N,) long, the window each box came from.
        windows: (M, 4) x1y1x2y2 of the windows.
        scene_wh: (W, H).
        iou_thresh: same object when the boxes' IoU inside the overlap is at least this.
        margin: pixels (see :func:`cut_boxes`).

    Returns:
        ``keep`` (Q,) indices of the surviving boxes (for a merged group, its best-scoring
        member), ``boxes`` (Q, 4) their boxes (a merged group's hull) and ``shared`` (Q,)
        bool: the box lies in the overlap of its window with another (it may have a
        duplicate there).
    """
    n = len(boxes)
    cut = cut_boxes(boxes, windows[window_of], scene_wh, margin)  # (N,)
    dropped = torch.zeros(n, dtype=torch.bool)
    shared = torch.zeros(n, dtype=torch.bool)
    by_window = torch.argsort(window_of, stable=True)
    counts = torch.bincount(window_of, minlength=len(windows))  # (M,)
    ends = counts.cumsum(0)
    groups = _Groups()
    for i, j in overlapping_pairs(windows, margin).tolist():
        lo, hi = windows[[i, j], :2].amax(0), windows[[i, j], 2:].amin(0)  # (2,) the overlap
        line = hi <= lo  # (2,) windows that only touch along x / y: the overlap is a line
        if line.all():  # corner to corner: their shared objects are matched via the others
            continue
        region = torch.cat([lo - margin * line, hi + margin * line])  # (4,) a line: +- margin
        a = by_window[ends[i] - counts[i]:ends[i]]
        b = by_window[ends[j] - counts[j]:ends[j]]
        ra, rb = clip_to(boxes[a], region), clip_to(boxes[b], region)  # (na, 4), (nb, 4)
        in_a, in_b = _area(ra) > 0, _area(rb) > 0
        shared[a[in_a]] = True
        shared[b[in_b]] = True
        a, b, ra, rb = a[in_a], b[in_b], ra[in_a], rb[in_b]
        if line.any():  # across a line, compare the extents along it only
            ra, rb = ra.clone(), rb.clone()
            axis = 0 if line[0] else 1
            ra[:, [axis, axis + 2]] = rb[:, [axis, axis + 2]] = torch.tensor([0.0, 1.0])
        ca, cb = cut[a], cut[b]
        if not len(a) or not len(b) or not (ca.any() or cb.any()):
            continue
        iou = box_iou(ra, rb) * (labels[a][:, None] == labels[b][None])  # (na, nb)
        match = iou >= iou_thresh
        dropped[a[ca & (match & ~cb[None]).any(1)]] = True  # cut here, whole there
        dropped[b[cb & (match & ~ca[:, None]).any(0)]] = True
        both = iou * (ca[:, None] & cb[None])  # (na, nb) cut in both windows
        for best, k, rows, cols in ((*both.max(1), a, b), (*both.max(0), b, a)):
            for r, c in zip(rows[best >= iou_thresh].tolist(), cols[k[best >= iou_thresh]].tolist()):
                groups.union(r, c)

    out = boxes.clone()
    for members in groups.groups():
        members_t = torch.tensor(members)
        if dropped[members_t].any():  # one of them is seen whole by some window
            dropped[members_t] = True
            continue
        best = members_t[scores[members_t].argmax()]
        out[best] = torch.cat([boxes[members_t, :2].amin(0), boxes[members_t, 2:].amax(0)])
        dropped[members_t] = True
        dropped[best] = False
    keep = (~dropped).nonzero().squeeze(1)  # (Q,)
    return keep, out[keep], shared[keep]


def fuse(boxes: Tensor, scores: Tensor, labels: Tensor, kept: Tensor, iou_thresh: float,
         chunk: int = 1024) -> Tensor:
    """Score-weighted box fusion around the boxes NMS kept.

    Each box joins the best-scoring kept box of its class that it overlaps with IoU >=
    ``iou_thresh`` (the one that suppressed it); a kept box becomes the score-weighted
    mean of its group, with its own score.

    Args:
        boxes: (N, 4); scores: (N,); labels: (N,).
        kept: (K,) indices NMS kept, by decreasing score.

    Returns:
        (K, 4) fused boxes.
    """
    owner = torch.full((len(boxes),), -1, dtype=torch.long)
    for start in range(0, len(boxes), chunk):
        part = slice(start, start + chunk)
        iou = box_iou(boxes[part], boxes[kept])  # (c, K)
        iou = iou * (labels[part][:, None] == labels[kept][None])
        ok = iou >= iou_thresh
        first = torch.where(ok.any(1), ok.float().argmax(1), -1)  # best-scoring kept box
        owner[part] = first
    owner[kept] = torch.arange(len(kept))  # a kept box is its own group
    member = owner >= 0
    w = scores[member].double()
    total = torch.zeros(len(kept), dtype=torch.float64).index_add_(0, owner[member], w)
    summed = torch.zeros(len(kept), 4, dtype=torch.float64).index_add_(
        0, owner[member], boxes[member].double() * w[:, None])
    return (summed / total[:, None]).to(boxes.dtype)


def merge_windows(
    dets: dict[str, Tensor], window_of: Tensor, windows: Tensor, scene_wh: tuple[int, int],
    iou_thresh: float, margin: float, merge: str = "nms",
) -> dict[str, Tensor]:
    """One set of detections for the scene from the detections of its windows.

    Args:
        dets: ``boxes`` (N, 4) x1y1x2y2 in scene pixels, ``scores`` (N,), ``labels`` (N,),
            and any other per-box fields (GFL's ``spread``), all windows together.
        window_of: (N,) long, the window of each box.
        windows: (M, 4) x1y1x2y2 windows in scene pixels.
        scene_wh: (W, H).
        iou_thresh: IoU of class-wise NMS, and of the seam matching.
        margin: pixels (see :func:`cut_boxes`).
        merge: ``"nms"`` keeps the best box of each duplicate group; ``"fusion"`` replaces
            it by the group's score-weighted mean box (see :func:`fuse`).

    Returns:
        the same fields, sorted by decreasing score; a merged box carries the other fields
        of its best-scoring member.
    """
    if merge not in MERGES:
        raise ValueError(f"merge={merge!r}: expected one of {MERGES}")
    windows = windows.to(dets["boxes"])
    keep, boxes, shared = resolve_seams(dets["boxes"], dets["scores"], dets["labels"],
                                        window_of, windows, scene_wh, iou_thresh, margin)
    out = {k: v[keep] for k, v in dets.items()}
    out["boxes"] = boxes
    cand = shared.nonzero().squeeze(1)  # (S,) boxes that may have a duplicate
    kept = batched_nms(boxes[cand], out["scores"][cand], out["labels"][cand], iou_thresh)
    if merge == "fusion":
        boxes = boxes.clone()
        boxes[cand[kept]] = fuse(boxes[cand], out["scores"][cand], out["labels"][cand], kept,
                                 iou_thresh)
        out["boxes"] = boxes
    survivors = torch.cat([(~shared).nonzero().squeeze(1), cand[kept]])
    order = survivors[torch.argsort(out["scores"][survivors], descending=True, stable=True)]
    return {k: v[order] for k, v in out.items()}


def merge_sets(sets: list[dict[str, Tensor]], iou_thresh: float, merge: str = "nms",
               max_det: int | None = None) -> dict[str, Tensor]:
    """Detections of one image from several predictions of it (test-time flips, a full pass
    beside the windows): class-wise NMS over all of them, or with ``merge="fusion"`` each
    kept box replaced by the score-weighted mean of the boxes it suppressed (:func:`fuse`).

    Args:
        sets: each ``boxes`` (N_i, 4) x1y1x2y2 in the same pixels, ``scores`` (N_i,),
            ``labels`` (N_i,) and the same other per-box fields.
        iou_thresh: IoU at which two boxes of a class are one object.
        merge: ``"nms"`` or ``"fusion"``.
        max_det: keep at most this many (None: all).

    Returns:
        the same fields, sorted by decreasing score; a kept box carries the other fields of
        its own prediction.
    """
    if merge not in MERGES:
        raise ValueError(f"merge={merge!r}: expected one of {MERGES}")
    dets = {k: torch.cat([s[k] for s in sets]) for k in sets[0]}
    kept = batched_nms(dets["boxes"], dets["scores"], dets["labels"], iou_thresh)  # by score
    out = {k: v[kept[:max_det]] for k, v in dets.items()}
    if merge == "fusion":
        out["boxes"] = fuse(dets["boxes"], dets["scores"], dets["labels"], kept,
                            iou_thresh)[:max_det]
    return out
