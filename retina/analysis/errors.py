"""Where mAP_50 goes: the error types of TIDE (Bolya et al., ECCV 2020), each costed by fixing
it with an oracle and re-scoring with the same evaluator (COCOeval at IoU 0.5).

Every false positive of COCOeval's matching at IoU ``FOREGROUND_IOU`` gets one type, tested in
TIDE's order against the image's ground truth (crowd boxes left out); IoU is pycocotools':

1. ``localisation``: right class, best IoU with a box of its class in [background_iou, 0.5);
2. ``classification``: IoU >= 0.5 with a box of another class;
3. ``duplicate``: IoU >= 0.5 with a box of its class that a higher-scoring detection took;
4. ``background``: IoU < background_iou with every box;
5. ``both``: the rest (wrong class, and IoU in [background_iou, 0.5) with that box).

A ground-truth box that no detection matched and no localisation or classification error
points at is ``missed``. Fixing: a localisation or classification error takes its box's class
and coordinates (only the highest-scoring error per box, and only if no detection matched
that box; the others are dropped); duplicate, background and both errors are dropped;
missed boxes are removed from the ground truth. Fixing every type leaves only true
positives, so mAP_50 becomes 1.
"""

from __future__ import annotations

import contextlib
import io
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # off-screen: no pyplot, no global backend
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from retina.analysis.matching import Matching, match
from retina.training.coco_eval import mean_valid, precision_at, run_cocoeval

FOREGROUND_IOU = 0.5
ERROR_TYPES = ("classification", "localisation", "both", "duplicate", "background", "missed")
FIXED_ONTO_BOX = ("classification", "localisation")  # the others are dropped
MEANING = {
    "classification": "right place (IoU >= 0.5), wrong class",
    "localisation": "right class, IoU in [background, 0.5)",
    "both": "wrong class and IoU in [background, 0.5)",
    "duplicate": "a second detection on a box already found",
    "background": "IoU < background with every box",
    "missed": "a box no detection found or points at",
}


@dataclass
class Errors:
    """The error of every false positive and the missed boxes (COCOeval ids).

    Attributes:
        det: false-positive detection id -> (type, id of the box it is about; 0 for
            ``duplicate`` pointing nowhere new, ``background`` and ``both``).
        missed: ground-truth ids no detection matched or points at.
        fixes: ground-truth id -> the detection fixed onto it (highest-scoring localisation
            or classification error on a box no detection matched).
    """

    det: dict[int, tuple[str, int]]
    missed: list[int]
    fixes: dict[int, int]

    def count(self, kind: str) -> int:
        if kind == "missed":
            return len(self.missed)
        return sum(k == kind for k, _ in self.det.values())


def error_type(
    iou: np.ndarray, same: np.ndarray, used: np.ndarray, background_iou: float
) -> tuple[str, int | None]:
    """The type of one false positive and the index of the box it is about (None: none).

    Args:
        iou: (G,) IoU with each ground-truth box of the image.
        same: (G,) whether that box has the detection's class.
        used: (G,) whether a detection matched that box.
        background_iou: below this IoU with every box a detection is background.
    """
    same_iou = np.where(same, iou, 0.0)  # (G,)
    other_iou = np.where(same, 0.0, iou)  # (G,)
    j = int(same_iou.argmax())
    if background_iou <= same_iou[j] < FOREGROUND_IOU:
        return "localisation", j
    j = int(other_iou.argmax())
    if other_iou[j] >= FOREGROUND_IOU:
        return "classification", j
    if np.where(used, same_iou, 0.0).max() >= FOREGROUND_IOU:
        return "duplicate", None
    if iou.max() < background_iou:
        return "background", None
    return "both", None


def _by_image(ids, anns: dict) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = defaultdict(list)
    for i in ids:
        groups[anns[i]["image_id"]].append(i)
    return groups


def classify(ev: COCOeval, matching: Matching, background_iou: float = 0.1) -> Errors:
    """The :class:`Errors` of an evaluated ``ev`` whose matching at IoU 0.5 is ``matching``."""
    gt_anns, dt_anns = ev.cocoGt.anns, ev.cocoDt.anns
    used = {g for g, d in matching.gt_det.items() if d}
    gts_of = _by_image(matching.gt_det, gt_anns)
    det, fixes = {}, {}
    for image, dets in _by_image([d for d, g in matching.det_gt.items() if not g], dt_anns).items():
        gts = gts_of.get(image, [])
        if not gts:
            det.update({d: ("background", 0) for d in dets})
            continue
        iou = np.asarray(mask_utils.iou([dt_anns[d]["bbox"] for d in dets],  # (D, G)
                                        [gt_anns[g]["bbox"] for g in gts], [0] * len(gts)))
        gt_cats = np.array([gt_anns[g]["category_id"] for g in gts])  # (G,)
        gt_used = np.array([g in used for g in gts])  # (G,)
        for row, d in zip(iou, dets):
            kind, j = error_type(row, gt_cats == dt_anns[d]["category_id"], gt_used, background_iou)
            target = 0 if j is None else gts[j]
            det[d] = (kind, target)
            if kind in FIXED_ONTO_BOX and target not in used:
                best = fixes.get(target)
                if best is None or dt_anns[d]["score"] > dt_anns[best]["score"]:
                    fixes[target] = d
    missed = [g for g, d in matching.gt_det.items() if not d and g not in fixes]
    return Errors(det, missed, fixes)


def fixed(ev: COCOeval, matching: Matching, errors: Errors, kinds: tuple[str, ...]):
    """The ground truth and results of ``ev`` with the errors of ``kinds`` fixed.

    Returns:
        ``(coco_gt, results)``: the ground truth (without the missed boxes if ``missed`` is
        in ``kinds``) and the results the evaluator looked at, fixed.
    """
    gt_anns, dt_anns = ev.cocoGt.anns, ev.cocoDt.anns
    fixed_onto = {d: g for g, d in errors.fixes.items()}
    results = []
    for d in sorted(matching.evaluated):
        ann = dt_anns[d]
        entry = {k: ann[k] for k in ("image_id", "category_id", "bbox", "score")}
        kind = errors.det.get(d, ("", 0))[0]
        if kind in kinds:
            if d not in fixed_onto:
                continue  # dropped
            box = gt_anns[fixed_onto[d]]
            entry |= {"category_id": box["category_id"], "bbox": list(box["bbox"])}
        results.append(entry)
    coco_gt = ev.cocoGt
    if "missed" in kinds:
        gone = set(errors.missed)
        coco_gt = COCO()
        coco_gt.dataset = {**ev.cocoGt.dataset, "annotations": [
            a for a in ev.cocoGt.dataset["annotations"] if a["id"] not in gone]}
        with contextlib.redirect_stdout(io.StringIO()):
            coco_gt.createIndex()
    return coco_gt, results


def map_50(coco_gt: COCO, results: list[dict], image_ids: list[int]) -> float | None:
    """pycocotools' mAP_50 (stats[1]), from an evaluation at IoU 0.5 only; None when no
    category has ground truth left (pycocotools' -1). Scored by pycocotools, like the
    evaluation the errors are read from (faster-coco-eval's can differ in the last bit, and
    a gain would then show it)."""
    ev = run_cocoeval(coco_gt, results, image_ids, iou_thrs=[FOREGROUND_IOU],
                      backend="pycocotools")
    ap = mean_valid(precision_at(ev, FOREGROUND_IOU))
    return None if ap == -1 else ap


def breakdown(ev: COCOeval, background_iou: float = 0.1) -> dict:
    """What each error type costs in mAP_50.

    Args:
        ev: an evaluated COCOeval whose thresholds include 0.5.
        background_iou: TIDE's background threshold.

    Returns:
        ``{"mAP_50", "mAP_50_all_fixed", "background_iou", "types": {type: {"count",
        "mAP_50_gain"}}}``; a gain is mAP_50 with that type fixed minus mAP_50. A number is
        None where no ground truth is left to score (no boxes at all, or every box missed and
        removed by the fix).
    """
    matching = match(ev, FOREGROUND_IOU)
    errors = classify(ev, matching, background_iou)
    base = mean_valid(precision_at(ev, FOREGROUND_IOU))
    base = None if base == -1 else base
    image_ids = list(ev.params.imgIds)
    types = {}
    for kind in ERROR_TYPES:
        ap = map_50(*fixed(ev, matching, errors, (kind,)), image_ids)
        types[kind] = {"count": errors.count(kind),
                       "mAP_50_gain": None if ap is None or base is None else ap - base}
    return {"mAP_50": base, "mAP_50_all_fixed": map_50(*fixed(ev, matching, errors, ERROR_TYPES),
                                                        image_ids),
            "background_iou": background_iou, "types": types}


def _number(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def to_markdown(result: dict) -> str:
    """The breakdown of :func:`breakdown` as a markdown table, costliest first ("n/a": no
    ground truth left to score)."""
    lines = [
        "# Where mAP_50 goes", "",
        f"mAP_50 **{_number(result['mAP_50'])}**; with every error fixed: "
        f"{_number(result['mAP_50_all_fixed'])}. Each row fixes one error type with an oracle "
        "and re-scores with COCOeval at IoU 0.5 (TIDE, Bolya et al., ECCV 2020; background "
        f"below IoU {result['background_iou']:g}); the gain is what that type costs.", "",
        "| error | count | mAP_50 gain | what it is |", "|---|---|---|---|",
    ]
    ranked = sorted(result["types"].items(), key=lambda kv: -(kv[1]["mAP_50_gain"] or 0.0))
    lines += [f"| {kind} | {v['count']} | {_number(v['mAP_50_gain'])} | {MEANING[kind]} |"
              for kind, v in ranked]
    return "\n".join(lines) + "\n"


def plot_errors(result: dict, path: str | Path) -> Path:
    """A bar per error type: the mAP_50 it costs, with its count."""
    kinds = list(ERROR_TYPES)[::-1]  # top to bottom in ERROR_TYPES order
    gains = [result["types"][k]["mAP_50_gain"] or 0.0 for k in kinds]
    fig = Figure(figsize=(6.5, 3.2))
    ax = fig.subplots()
    bars = ax.barh(kinds, gains, color="tab:red")
    for bar, kind in zip(bars, kinds):
        v = result["types"][kind]
        ax.annotate(f"{_number(v['mAP_50_gain'], 3)} (n={v['count']})",
                    (bar.get_width(), bar.get_y() + bar.get_height() / 2), xytext=(3, 0),
                    textcoords="offset points", va="center", fontsize=8)
    ax.set_xlim(0, max(max(gains) * 1.35, 0.01))
    ax.set_xlabel("mAP_50 gained by fixing it")
    ax.set_title(f"mAP_50 {_number(result['mAP_50'], 3)}; "
                 f"all fixed {_number(result['mAP_50_all_fixed'], 3)}", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return Path(path)
