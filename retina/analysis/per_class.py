"""The per-class table of the report: AP, AP_50, AP_75, AR_100 (COCOeval's own numbers per
category) with the number of ground-truth boxes and detections of each class."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

from pycocotools.cocoeval import COCOeval

from retina.training.coco_eval import PER_CLASS_STATS, per_class_metrics

COLUMNS = ("class", "category_id", *PER_CLASS_STATS, "num_gt", "num_det")


def gt_counts(ev: COCOeval) -> Counter:
    """Non-crowd ground-truth boxes per category id on the evaluated images."""
    images = set(ev.params.imgIds)
    return Counter(a["category_id"] for a in ev.cocoGt.dataset["annotations"]
                   if a["image_id"] in images and not a.get("iscrowd", 0))


def per_class_rows(ev: COCOeval) -> list[dict]:
    """One row per category that has ground truth or detections in the evaluated images,
    best AP first; categories without ground truth (AP -1) last.

    Args:
        ev: an accumulated COCOeval (COCO's default IoU thresholds).

    Returns:
        rows with the keys :data:`COLUMNS`; ``num_gt`` counts the non-crowd boxes,
        ``num_det`` every detection of the category on the evaluated images.
    """
    images = set(ev.params.imgIds)
    gts = gt_counts(ev)
    dets = Counter(a["category_id"] for a in ev.cocoDt.anns.values() if a["image_id"] in images)
    rows = [
        {"class": ev.cocoGt.cats[cat]["name"], "category_id": cat, **stats,
         "num_gt": gts[cat], "num_det": dets[cat]}
        for cat, stats in per_class_metrics(ev).items()
        if gts[cat] or dets[cat]
    ]
    return sorted(rows, key=lambda r: (r["AP"] == -1, -r["AP"], r["category_id"]))


def write_csv(rows: list[dict], path: str | Path) -> Path:
    """The rows as CSV (full precision; -1 where a class has no ground truth)."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return Path(path)


def _cell(value) -> str:
    if isinstance(value, float):
        return "-" if value == -1 else f"{value:.3f}"
    return str(value).replace("|", "\\|")


def to_markdown(rows: list[dict]) -> str:
    """The rows as a markdown table, numbers to 3 decimals ("-": no ground truth)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(r[c]) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines) + "\n"
