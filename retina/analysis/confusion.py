"""Confusion matrix of detections against ground truth: classes + background, at one IoU and
one score threshold.

Per image, the detections scoring >= ``score_thresh`` are matched to the ground-truth boxes
class-agnostically, highest score first, each to the unmatched box it overlaps most if that
IoU (pycocotools') is >= ``iou_thresh``. A matched pair counts at (true class, predicted
class); an unmatched detection at (background, predicted class), unless it overlaps a crowd
box by >= ``iou_thresh`` (then it is not counted, as COCOeval ignores it); an unmatched box
at (true class, background).
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # off-screen: no pyplot, no global backend
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

BACKGROUND = "background"


def _iou(dets: list[dict], gts: list[dict], crowd: bool) -> np.ndarray:
    """(D, G) pycocotools IoU (for crowd boxes: intersection over the detection's area)."""
    if not dets or not gts:
        return np.zeros((len(dets), len(gts)))
    return np.asarray(mask_utils.iou([d["bbox"] for d in dets], [g["bbox"] for g in gts],
                                     [int(crowd)] * len(gts)))


def confusion_matrix(
    coco_gt: COCO, results: list[dict], image_ids: list[int], iou_thresh: float = 0.5,
    score_thresh: float = 0.3,
) -> np.ndarray:
    """Counts (K + 1, K + 1): rows the true class, columns the predicted one, in sorted
    category-id order with background last; (background, background) stays 0."""
    cats = sorted(coco_gt.getCatIds())
    index = {c: i for i, c in enumerate(cats)}
    bg = len(cats)
    matrix = np.zeros((bg + 1, bg + 1), dtype=np.int64)
    dets_of = defaultdict(list)
    for r in results:
        if r["score"] >= score_thresh:
            dets_of[r["image_id"]].append(r)
    for image in image_ids:
        dets = sorted(dets_of[image], key=lambda d: -d["score"])
        anns = coco_gt.imgToAnns.get(image, [])
        gts = [a for a in anns if not a.get("iscrowd", 0)]
        crowd_iou = _iou(dets, [a for a in anns if a.get("iscrowd", 0)], crowd=True)  # (D, C)
        iou = _iou(dets, gts, crowd=False)  # (D, G)
        taken = np.zeros(len(gts), dtype=bool)
        for i, det in enumerate(dets):
            free = np.where(taken, -1.0, iou[i])  # (G,)
            j = int(free.argmax()) if free.size else -1
            if j >= 0 and free[j] >= iou_thresh:
                taken[j] = True
                matrix[index[gts[j]["category_id"]], index[det["category_id"]]] += 1
            elif not (crowd_iou[i] >= iou_thresh).any():
                matrix[bg, index[det["category_id"]]] += 1
        for g in np.flatnonzero(~taken):
            matrix[index[gts[g]["category_id"]], bg] += 1
    return matrix


def drop_empty(matrix: np.ndarray, names: list[str]) -> tuple[np.ndarray, list[str]]:
    """Without the classes that have neither boxes nor detections (an empty row and column);
    background stays."""
    keep = [i for i in range(len(names))
            if i == len(names) - 1 or matrix[i].any() or matrix[:, i].any()]
    return matrix[np.ix_(keep, keep)], [names[i] for i in keep]


def normalised(matrix: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (where a true class went); rows without counts stay 0."""
    sums = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, sums, out=np.zeros(matrix.shape), where=sums > 0)


def labels(coco_gt: COCO) -> list[str]:
    """Row and column names: the category names in sorted id order, then background."""
    return [coco_gt.cats[c]["name"] for c in sorted(coco_gt.getCatIds())] + [BACKGROUND]


def write_csv(matrix: np.ndarray, names: list[str], path: str | Path) -> Path:
    """The matrix with a header row of predicted classes and a first column of true ones."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["true \\ predicted", *names])
        for name, row in zip(names, matrix.tolist()):
            writer.writerow([name, *row])
    return Path(path)


def plot_confusion(
    matrix: np.ndarray, names: list[str], path: str | Path, iou_thresh: float, score_thresh: float
) -> Path:
    """Row-normalised colours with the counts written in (for up to 30 classes)."""
    n = len(names)
    fig = Figure(figsize=(2.5 + 0.45 * n, 2 + 0.4 * n))
    ax = fig.subplots()
    image = ax.imshow(normalised(matrix), cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class (row)")
    ax.set_xticks(range(n), names, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(n), names, fontsize=7)
    ax.set(xlabel="predicted", ylabel="true",
           title=f"confusion at IoU {iou_thresh:g}, score >= {score_thresh:g}")
    if n <= 31:
        share = normalised(matrix)
        for (i, j), count in np.ndenumerate(matrix):
            if count:
                ax.text(j, i, str(count), ha="center", va="center", fontsize=7,
                        color="white" if share[i, j] > 0.5 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return Path(path)
