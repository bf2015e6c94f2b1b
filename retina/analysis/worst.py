"""The images with the most missed and false boxes, listed and drawn (ground truth next to
the predictions).

Counted from COCOeval's matching at IoU 0.5 (:mod:`retina.analysis.matching`), for the
detections scoring >= ``score_thresh``: COCOeval matches in score order, so the matches of
those detections are the ones it would find among them alone. A box is missed when no such
detection matched it; a detection is false when it matched nothing.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import torch
from matplotlib.figure import Figure  # off-screen: no pyplot, no global backend
from pycocotools.cocoeval import COCOeval

from retina.analysis.matching import Matching
from retina.analysis.viz import draw_boxes, show_boxes
from retina.data.coco import read_rgb
from retina.training.coco_eval import coco_boxes

COLUMNS = ("image_id", "file_name", "num_gt", "num_det", "missed", "false")


def image_rows(ev: COCOeval, matching: Matching, score_thresh: float) -> list[dict]:
    """Per evaluated image: its ground truth, detections >= ``score_thresh``, missed boxes and
    false detections (lists of COCOeval ids), most missed + false first.

    Returns:
        rows with the keys :data:`COLUMNS` (counts) and ``gt_ids``, ``det_ids``,
        ``missed_ids``, ``false_ids``.
    """
    gt_anns, dt_anns = ev.cocoGt.anns, ev.cocoDt.anns
    kept = {d for d in matching.det_gt if dt_anns[d]["score"] >= score_thresh}
    ids = {i: defaultdict(list) for i in ev.params.imgIds}
    for g, d in matching.gt_det.items():
        row = ids[gt_anns[g]["image_id"]]
        row["gt_ids"].append(g)
        if d not in kept:
            row["missed_ids"].append(g)
    for d in kept:
        row = ids[dt_anns[d]["image_id"]]
        row["det_ids"].append(d)
        if not matching.det_gt[d]:
            row["false_ids"].append(d)
    rows = []
    for image, row in ids.items():
        lists = {k: sorted(row[k]) for k in ("gt_ids", "det_ids", "missed_ids", "false_ids")}
        rows.append({"image_id": image, "file_name": ev.cocoGt.imgs[image].get("file_name", ""),
                     "num_gt": len(lists["gt_ids"]), "num_det": len(lists["det_ids"]),
                     "missed": len(lists["missed_ids"]), "false": len(lists["false_ids"]), **lists})
    return sorted(rows, key=lambda r: (-(r["missed"] + r["false"]), r["image_id"]))


def to_markdown(rows: list[dict], score_thresh: float, drawn: dict[int, str]) -> str:
    """The rows as a markdown table, with a link to each drawing in ``drawn`` (image id ->
    path relative to the markdown file)."""
    lines = [f"Detections scoring >= {score_thresh:g}, matched by COCOeval at IoU 0.5: "
             "`missed` boxes no detection found, `false` detections that match no box.", "",
             "| " + " | ".join([*COLUMNS, "drawn"]) + " |", "|" + "---|" * (len(COLUMNS) + 1)]
    for r in rows:
        link = f"[png]({drawn[r['image_id']]})" if r["image_id"] in drawn else ""
        lines.append("| " + " | ".join(str(r[c]) for c in COLUMNS) + f" | {link} |")
    return "\n".join(lines) + "\n"


def draw_image(ev: COCOeval, row: dict, images_dir: str | Path, path: str | Path) -> Path:
    """Ground truth (left: found green, missed red) next to the detections (right: matched
    yellow, false red, with class and score) of one row of :func:`image_rows`, saved as
    ``path`` (``.jpg``: JPEG quality 85)."""
    gt_anns, dt_anns, cats = ev.cocoGt.anns, ev.cocoDt.anns, ev.cocoGt.cats
    image = read_rgb(Path(images_dir) / row["file_name"])
    height, width = image.shape[-2:]
    fig = Figure(figsize=(10, 0.8 + 5 * height / width))
    left, right = fig.subplots(1, 2)
    missed, false = set(row["missed_ids"]), set(row["false_ids"])
    found = [gt_anns[g] for g in row["gt_ids"] if g not in missed]
    show_boxes(left, image, coco_boxes(found), "lime",
               title=f"ground truth: {row['num_gt']}, missed (red): {row['missed']}")
    draw_boxes(left, coco_boxes([gt_anns[g] for g in row["missed_ids"]]), "red")
    show_boxes(right, image, torch.zeros(0, 4),
               title=f"detections: {row['num_det']}, false (red): {row['false']}")
    for color, ids in (("yellow", [d for d in row["det_ids"] if d not in false]),
                       ("red", row["false_ids"])):
        anns = [dt_anns[d] for d in ids]
        draw_boxes(right, coco_boxes(anns), color,
                   [f"{cats[a['category_id']]['name']} {a['score']:.2f}" for a in anns])
    fig.suptitle(f"image {row['image_id']}: {row['file_name']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100, pil_kwargs={"quality": 85} if Path(path).suffix == ".jpg" else None)
    return Path(path)
