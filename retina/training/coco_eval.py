"""COCO mAP, exactly pycocotools' numbers: detections in, pycocotools' 12 numbers out.

The evaluator (:func:`run_cocoeval`) is the one COCOeval that training, ``retina.eval`` and
the report all score with; per-class numbers and curves are read from its own arrays
(``ev.eval["precision"]`` (T, R, K, A, M), ``ev.eval["recall"]`` (T, K, A, M)).

Two backends, the same numbers (tests/training/test_coco_eval.py): ``faster-coco-eval``
(default; pycocotools' algorithm with the per-image matching and the accumulation in C++,
about 10x faster) and ``pycocotools`` (the reference; the only one that keeps the per-image
records ``ev.evalImgs`` that :mod:`retina.analysis.matching` reads). Both take
pycocotools' ``COCO`` ground truth; the reference loads the results with pycocotools'
``loadRes``, the default with :func:`results_coco` (the same annotations without the box
polygons ``loadRes`` adds, which bbox evaluation never reads and which took a third of the
default backend's time).
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Sequence

import numpy as np
import torch
from faster_coco_eval import COCOeval_faster
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import Tensor
from torchvision.ops import box_convert

# Names of COCOeval.stats[i] (bbox), in pycocotools' order.
STAT_NAMES = (
    "mAP", "mAP_50", "mAP_75", "mAP_small", "mAP_medium", "mAP_large",
    "AR_1", "AR_10", "AR_100", "AR_small", "AR_medium", "AR_large",
)  # fmt: skip
# Per-class numbers of :func:`per_class_metrics`: stats 0, 1, 2 and 8 for one category.
PER_CLASS_STATS = ("AP", "AP_50", "AP_75", "AR_100")
# Implementations of COCOeval (see the module docstring), the default first.
BACKENDS = ("faster-coco-eval", "pycocotools")
Evaluation = COCOeval | COCOeval_faster  # what run_cocoeval returns


def to_coco_results(
    image_ids: list[int], detections: list[dict[str, Tensor]], cat_ids: list[int]
) -> list[dict]:
    """Detections (x1y1x2y2, original image pixels) -> COCO results entries (xywh).

    Args:
        image_ids: COCO image id per image.
        detections: per image ``boxes`` (D, 4), ``scores`` (D,), ``labels`` (D,) 0..K-1, and
            optionally ``spread`` (D, 4) (GFL: per-side std in pixels), kept as an extra
            ``spread`` field of each entry (pycocotools ignores it).
        cat_ids: category id of each contiguous label.
    """
    cats = np.asarray(cat_ids)
    out = []
    for image_id, det in zip(image_ids, detections):
        boxes = det["boxes"].detach().float().cpu().numpy()
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
        scores = det["scores"].detach().float().cpu().numpy()
        labels = cats[det["labels"].cpu().numpy()]
        entries = [
            {"image_id": int(image_id), "category_id": int(c), "bbox": [float(v) for v in b],
             "score": float(s)}
            for b, s, c in zip(xywh, scores, labels)
        ]
        if "spread" in det:
            for entry, spread in zip(entries, det["spread"].detach().float().cpu().tolist()):
                entry["spread"] = spread
        out.extend(entries)
    return out


def coco_boxes(entries: list[dict], dtype: torch.dtype = torch.float32) -> Tensor:
    """The ``bbox`` (x, y, w, h) of COCO annotations or results as (n, 4) x1y1x2y2."""
    xywh = torch.tensor([e["bbox"] for e in entries], dtype=dtype).reshape(-1, 4)
    return box_convert(xywh, "xywh", "xyxy")


def from_coco_results(
    results: list[dict], cat_ids: list[int], image_ids: list[int]
) -> list[dict[str, Tensor]]:
    """COCO results entries -> per image detections, the inverse of :func:`to_coco_results`.

    Args:
        results: entries with ``image_id``, ``category_id``, ``bbox`` (xywh), ``score`` and
            optionally ``spread`` (then every entry has it).
        cat_ids: category id of each contiguous label.
        image_ids: the images to return, in this order (an image without entries gets
            empty tensors).

    Returns:
        per image ``boxes`` (D, 4) x1y1x2y2, ``scores`` (D,), ``labels`` (D,) 0..K-1 and
        ``spread`` (D, 4) if the entries carry it; entries in their given order.
    """
    label_of = {c: i for i, c in enumerate(cat_ids)}
    with_spread = bool(results) and all("spread" in r for r in results)
    per_image: dict[int, list[dict]] = {int(i): [] for i in image_ids}
    for r in results:
        if int(r["image_id"]) in per_image:
            per_image[int(r["image_id"])].append(r)
    out = []
    for image_id in image_ids:
        entries = per_image[int(image_id)]
        det = {
            "boxes": coco_boxes(entries),  # (D, 4)
            "scores": torch.tensor([r["score"] for r in entries], dtype=torch.float32),
            "labels": torch.tensor([label_of[r["category_id"]] for r in entries], dtype=torch.long),
        }
        if with_spread:
            det["spread"] = torch.tensor([r["spread"] for r in entries],
                                         dtype=torch.float32).reshape(-1, 4)
        out.append(det)
    return out


def check_backend(backend: str, key: str = "backend") -> str:
    """``backend`` if it is one of :data:`BACKENDS`, else a ValueError naming ``key``."""
    if backend not in BACKENDS:
        raise ValueError(f"{key} must be one of {', '.join(BACKENDS)}, got {backend!r}")
    return backend


def results_coco(coco_gt: COCO, results: list[dict]) -> COCO:
    """Box detections as the ``COCO`` object pycocotools' ``loadRes`` makes of them: detection
    ``i`` gets the id ``i + 1``, ``area`` w * h and ``iscrowd`` 0; not the polygon ``loadRes``
    adds to each box (bbox evaluation never reads it). ``results`` are left as they are."""
    unknown = {r["image_id"] for r in results} - set(coco_gt.imgs)
    if unknown:
        raise ValueError(f"detections of {len(unknown)} image id(s) not in the ground truth, "
                         f"e.g. {sorted(unknown)[:5]}")
    coco_dt = COCO()
    coco_dt.dataset = {
        "images": list(coco_gt.dataset["images"]),
        "categories": copy.deepcopy(coco_gt.dataset["categories"]),
        "annotations": [dict(r, id=i + 1, area=r["bbox"][2] * r["bbox"][3], iscrowd=0)
                        for i, r in enumerate(results)],
    }
    coco_dt.createIndex()  # its prints: run_cocoeval silences them
    return coco_dt


def run_cocoeval(
    coco_gt: COCO,
    results: list[dict],
    image_ids: list[int] | None = None,
    iou_thrs: Sequence[float] | None = None,
    backend: str = BACKENDS[0],
    max_dets: Sequence[int] | None = None,
) -> Evaluation:
    """pycocotools' bbox evaluation, evaluated and accumulated (its prints silenced).

    Args:
        coco_gt: ground truth.
        results: COCO results entries; copied, so pycocotools' ``loadRes`` leaves them as
            they are. Detection ``i`` of ``results`` gets the id ``i + 1`` in ``ev.cocoDt``.
        image_ids: images to evaluate (default: all images of ``coco_gt``); images
            without detections count as misses.
        iou_thrs: IoU thresholds (default: COCO's 0.50:0.05:0.95).
        backend: one of :data:`BACKENDS`.
        max_dets: increasing detections-per-image limits (default COCO's 1, 10, 100),
            the last axis of ``ev.eval``'s arrays (``summarize`` reads ``mAP`` at 100
            whatever they are).

    Returns:
        the COCOeval (``faster_coco_eval.COCOeval_faster`` for the default backend), with
        ``params``, ``eval`` and ``cocoGt``/``cocoDt`` as pycocotools'; ``evalImgs`` is
        filled in by ``pycocotools`` only.
    """
    check_backend(backend)
    with contextlib.redirect_stdout(io.StringIO()):
        if backend == "pycocotools":
            coco_dt = coco_gt.loadRes([dict(r) for r in results]) if results else COCO()
            ev = COCOeval(coco_gt, coco_dt, "bbox")
        else:  # printing to stdout like pycocotools, which summarize() reads
            coco_dt = results_coco(coco_gt, results) if results else COCO()
            ev = COCOeval_faster(coco_gt, coco_dt, "bbox", print_function=print)
        if image_ids is not None:
            ev.params.imgIds = sorted(set(int(i) for i in image_ids))
        if iou_thrs is not None:
            ev.params.iouThrs = np.asarray(iou_thrs, dtype=np.float64)
        if max_dets is not None:
            ev.params.maxDets = [int(m) for m in max_dets]
        ev.evaluate()
        ev.accumulate()
    return ev


def summarize(ev: Evaluation) -> tuple[dict[str, float], str]:
    """pycocotools' 12 stats of an accumulated COCOeval and its 12-line summary table
    (faster-coco-eval prints two more lines, AR at IoU 0.5 and 0.75: left out)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        ev.summarize()
    lines = [ln for ln in buf.getvalue().splitlines() if ln.lstrip().startswith("Average")]
    stats = (float(s) for s in ev.stats[: len(STAT_NAMES)])
    return dict(zip(STAT_NAMES, stats)), "\n".join(lines[: len(STAT_NAMES)])


def coco_evaluate(
    coco_gt: COCO, results: list[dict], image_ids: list[int] | None = None, verbose: bool = False,
    backend: str = BACKENDS[0],
) -> tuple[dict[str, float], str]:
    """pycocotools bbox evaluation.

    Args:
        coco_gt: ground truth.
        results: COCO results entries.
        image_ids: images to evaluate (default: all images of ``coco_gt``); images
            without detections count as misses.
        verbose: also print pycocotools' table.
        backend: one of :data:`BACKENDS`.

    Returns:
        ``{name: value}`` for the 12 stats (see :data:`STAT_NAMES`; -1 where
        pycocotools has no ground truth for a stat) and pycocotools' 12-line summary table.
    """
    metrics, table = summarize(run_cocoeval(coco_gt, results, image_ids, backend=backend))
    if verbose:
        print(table)
    return metrics, table


def at_max_dets(coco_gt: COCO, results: list[dict], image_ids: list[int] | None, n: int,
                backend: str = BACKENDS[0]) -> dict[str, float]:
    """mAP, mAP_50 and AR counting up to ``n`` detections per image, where COCO's numbers stop
    at 100 (a whole scene holds more objects): ``mAP_<n>``, ``mAP_50_<n>``, ``AR_<n>``."""
    ev = run_cocoeval(coco_gt, results, image_ids, max_dets=(1, 10, n), backend=backend)
    a = ev.params.areaRngLbl.index("all")
    precision = ev.eval["precision"][..., a, -1]  # (T, R, K) at n
    return {f"mAP_{n}": mean_valid(precision),
            f"mAP_50_{n}": mean_valid(precision[iou_index(ev, 0.5)]),
            f"AR_{n}": mean_valid(ev.eval["recall"][..., a, -1])}


def mean_valid(values: np.ndarray) -> float:
    """Mean of the entries > -1 (pycocotools' "no ground truth" marker), -1 if there are none."""
    kept = values[values > -1]
    return float(np.mean(kept)) if kept.size else -1.0


def precision_at(ev: Evaluation, iou: float | None = None) -> np.ndarray:
    """Precision over recall thresholds, area "all", 100 detections per image.

    Args:
        ev: an accumulated COCOeval.
        iou: one of ``ev.params.iouThrs`` (None: all of them).

    Returns:
        (T, R, K) for ``iou=None``, else (R, K); -1 where a category has no ground truth.
    """
    a = ev.params.areaRngLbl.index("all")
    m = ev.params.maxDets.index(100)
    precision = ev.eval["precision"][:, :, :, a, m]  # (T, R, K)
    return precision if iou is None else precision[iou_index(ev, iou)]


def iou_index(ev: Evaluation, iou: float) -> int:
    """Index of ``iou`` in ``ev.params.iouThrs`` (a ValueError if it is not one of them)."""
    found = np.flatnonzero(np.isclose(ev.params.iouThrs, iou))
    if not found.size:
        raise ValueError(f"IoU {iou} is not one of the evaluated thresholds {ev.params.iouThrs}")
    return int(found[0])


def per_class_metrics(ev: Evaluation) -> dict[int, dict[str, float]]:
    """AP, AP_50, AP_75 and AR_100 of each category, as pycocotools' ``summarize`` computes
    stats 0, 1, 2 and 8 (from ``ev.eval``), so each equals the evaluation restricted to that
    category (``params.catIds=[c]``).

    Args:
        ev: an accumulated COCOeval with COCO's default IoU thresholds.

    Returns:
        ``{category id: {name: value}}`` for every category of ``ev.params.catIds``, names
        :data:`PER_CLASS_STATS`; -1 for a category without ground truth.
    """
    precision = precision_at(ev)  # (T, R, K)
    a = ev.params.areaRngLbl.index("all")
    m = ev.params.maxDets.index(100)
    recall = ev.eval["recall"][:, :, a, m]  # (T, K)
    t50, t75 = iou_index(ev, 0.5), iou_index(ev, 0.75)
    return {
        int(cat): {
            "AP": mean_valid(precision[:, :, k]),
            "AP_50": mean_valid(precision[t50, :, k]),
            "AP_75": mean_valid(precision[t75, :, k]),
            "AR_100": mean_valid(recall[:, k]),
        }
        for k, cat in enumerate(ev.params.catIds)
    }
