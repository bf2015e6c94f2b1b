"""COCO mAP with pycocotools, exactly: detections in, pycocotools' 12 numbers out."""

from __future__ import annotations

import contextlib
import io

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import Tensor

# Names of COCOeval.stats[i] (bbox), in pycocotools' order.
STAT_NAMES = (
    "mAP", "mAP_50", "mAP_75", "mAP_small", "mAP_medium", "mAP_large",
    "AR_1", "AR_10", "AR_100", "AR_small", "AR_medium", "AR_large",
)  # fmt: skip


def to_coco_results(
    image_ids: list[int], detections: list[dict[str, Tensor]], cat_ids: list[int]
) -> list[dict]:
    """Detections (x1y1x2y2, original image pixels) -> COCO results entries (xywh).

    Args:
        image_ids: COCO image id per image.
        detections: per image ``boxes`` (D, 4), ``scores`` (D,), ``labels`` (D,) 0..K-1.
        cat_ids: category id of each contiguous label.
    """
    cats = np.asarray(cat_ids)
    out = []
    for image_id, det in zip(image_ids, detections):
        boxes = det["boxes"].detach().float().cpu().numpy()
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
        scores = det["scores"].detach().float().cpu().numpy()
        labels = cats[det["labels"].cpu().numpy()]
        out.extend(
            {"image_id": int(image_id), "category_id": int(c), "bbox": [float(v) for v in b],
             "score": float(s)}
            for b, s, c in zip(xywh, scores, labels)
        )
    return out


def coco_evaluate(
    coco_gt: COCO, results: list[dict], image_ids: list[int] | None = None, verbose: bool = False
) -> tuple[dict[str, float], str]:
    """pycocotools bbox evaluation.

    Args:
        coco_gt: ground truth.
        results: COCO results entries.
        image_ids: images to evaluate (default: all images of ``coco_gt``); images
            without detections count as misses.
        verbose: also print pycocotools' table.

    Returns:
        ``{name: value}`` for the 12 stats (see :data:`STAT_NAMES`; -1 where
        pycocotools has no ground truth for a stat) and pycocotools' 12-line summary table.
    """
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        coco_dt = coco_gt.loadRes(results) if results else COCO()
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        if image_ids is not None:
            ev.params.imgIds = sorted(set(int(i) for i in image_ids))
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    table = "\n".join(ln for ln in buf.getvalue().splitlines() if ln.lstrip().startswith("Average"))
    if verbose:
        print(table)
    return dict(zip(STAT_NAMES, (float(s) for s in ev.stats))), table
