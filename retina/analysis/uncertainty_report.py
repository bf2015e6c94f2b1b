"""The report's view of GFL's box uncertainty: the detections with the widest box
distributions, and whether the predicted spread ranks the localisation error.

Detections carry ``spread`` (per-side std in pixels, :mod:`retina.ops.boxes`); the
uncertainty of one is its :func:`~retina.analysis.uncertainty.relative_spread`. Over the
true positives of COCOeval's matching at IoU 0.5, Spearman's rank correlation between that
and 1 - IoU with the matched box says how well uncertainty predicts localisation error
(1: the widest distributions are exactly the worst boxes).
"""

from __future__ import annotations

import torch
from pycocotools.cocoeval import COCOeval

from retina.analysis.matching import Matching
from retina.analysis.uncertainty import most_ambiguous, relative_spread, spearman
from retina.ops.boxes import paired_iou
from retina.training.coco_eval import coco_boxes, from_coco_results


def has_spread(ev: COCOeval) -> bool:
    """Whether the evaluated detections carry ``spread`` (all of them, and at least one)."""
    anns = ev.cocoDt.anns.values()
    return bool(anns) and all("spread" in a for a in anns)


def spread_vs_error(ev: COCOeval, matching: Matching) -> dict[str, float]:
    """Spearman's rho between relative spread and 1 - IoU over the matched detections.

    Returns:
        ``{"spearman": rho (NaN with fewer than 2 matches), "num_matched": n}``.
    """
    pairs = [(d, g) for d, g in matching.det_gt.items() if g]
    dets = [ev.cocoDt.anns[d] for d, _ in pairs]
    boxes = coco_boxes(dets, torch.float64)  # (n, 4)
    spread = torch.tensor([a["spread"] for a in dets], dtype=torch.float64).reshape(-1, 4)
    gt_boxes = coco_boxes([ev.cocoGt.anns[g] for _, g in pairs], torch.float64)  # (n, 4)
    error = 1 - paired_iou(boxes, gt_boxes)  # (n,)
    return {"spearman": spearman(relative_spread(boxes, spread), error), "num_matched": len(pairs)}


def widest(ev: COCOeval, matching: Matching, k: int = 20, min_score: float = 0.3) -> list[dict]:
    """The ``k`` evaluated detections scoring >= ``min_score`` with the widest box
    distributions, widest first, with the IoU of each with its matched box (None if false)."""
    ids = sorted(matching.evaluated)
    images = sorted({ev.cocoDt.anns[d]["image_id"] for d in ids})
    per_image = {i: [] for i in images}
    for d in ids:
        per_image[ev.cocoDt.anns[d]["image_id"]].append(d)
    cats = sorted(ev.cocoGt.getCatIds())
    dets = from_coco_results([ev.cocoDt.anns[d] for d in ids], cats, images)
    rows = []
    for a in most_ambiguous(images, dets, k=k, min_score=min_score):
        d = per_image[a.image_id][a.index]
        g = matching.det_gt.get(d, 0)
        iou = None
        if g:
            det_box, gt_box = coco_boxes([ev.cocoDt.anns[d], ev.cocoGt.anns[g]], torch.float64)
            iou = float(paired_iou(det_box, gt_box))
        rows.append({"image_id": a.image_id,
                     "file_name": ev.cocoGt.imgs[a.image_id].get("file_name", ""),
                     "class": ev.cocoGt.cats[cats[a.label]]["name"], "score": a.score,
                     "relative_spread": a.uncertainty,
                     "spread_px": [round(v, 2) for v in a.spread.tolist()], "iou": iou})
    return rows


def to_markdown(rows: list[dict], stats: dict[str, float], min_score: float) -> str:
    """The uncertainty view: the correlation and the widest detections as a table."""
    lines = [
        "# Box uncertainty (GFL)", "",
        f"Spearman's rank correlation between relative spread and 1 - IoU with the matched box, "
        f"over the {stats['num_matched']} true positives at IoU 0.5: **{stats['spearman']:.3f}** "
        "(1: the widest distributions are the worst boxes; 0: unrelated).", "",
        f"Widest box distributions among detections scoring >= {min_score:g} (relative spread: "
        "mean per-side std over the box's width / height):", "",
        "| image_id | file_name | class | score | relative spread | spread l t r b (px) | IoU |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        iou = "false" if r["iou"] is None else f"{r['iou']:.3f}"
        lines.append(f"| {r['image_id']} | {r['file_name']} | {r['class']} | {r['score']:.3f} | "
                     f"{r['relative_spread']:.3f} | {' '.join(map(str, r['spread_px']))} | {iou} |")
    return "\n".join(lines) + "\n"
