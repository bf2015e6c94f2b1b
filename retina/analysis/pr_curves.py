"""Precision-recall curves straight from COCOeval's arrays: ``eval["precision"]`` and
``eval["scores"]`` (T, R, K, A, M) on its 101 recall thresholds (interpolated precision),
one line per class, each with its best-F1 point and the score threshold there."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # off-screen: no pyplot, no global backend
from pycocotools.cocoeval import COCOeval

from retina.analysis.per_class import gt_counts
from retina.training.coco_eval import iou_index


def curves(ev: COCOeval, iou: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Recall thresholds (R,), precision (R, K) and the detection score there (R, K), area
    "all", 100 detections; precision -1 for a class without ground truth."""
    t = iou_index(ev, iou)
    a, m = ev.params.areaRngLbl.index("all"), ev.params.maxDets.index(100)
    return (np.asarray(ev.params.recThrs), ev.eval["precision"][t, :, :, a, m],
            ev.eval["scores"][t, :, :, a, m])


def best_f1(ev: COCOeval, iou: float = 0.5) -> dict[int, dict[str, float]]:
    """Per category with ground truth, the point of its curve with the highest F1.

    F1 = 2 P R / (P + R) at each recall threshold R and its interpolated precision P (0 where
    both are 0); the first maximum counts. ``score`` is the score of the detection at which
    COCOeval's curve reaches that recall: keeping detections scoring >= it gives that point.

    Returns:
        ``{category id: {"f1", "precision", "recall", "score"}}``.
    """
    recall, precision, scores = curves(ev, iou)
    out = {}
    for k, cat in enumerate(ev.params.catIds):
        p = precision[:, k]  # (R,)
        if (p < 0).any():  # no ground truth
            continue
        total = p + recall
        f1 = np.divide(2 * p * recall, total, out=np.zeros_like(p), where=total > 0)  # (R,)
        r = int(f1.argmax())
        out[int(cat)] = {"f1": float(f1[r]), "precision": float(p[r]),
                         "recall": float(recall[r]), "score": float(scores[r, k])}
    return out


def plot_pr_curves(
    ev: COCOeval, path: str | Path, ious: tuple[float, ...] = (0.5, 0.75), max_classes: int = 20
) -> Path:
    """One panel per IoU in ``ious``; a line per class (the ``max_classes`` with the most
    ground truth), its best-F1 point marked and labelled with its score threshold."""
    gt_count = gt_counts(ev)
    with_gt = sorted((c for c in ev.params.catIds if gt_count[c]), key=lambda c: -gt_count[c])
    shown = with_gt[:max_classes]
    note = f" ({len(shown)} of {len(with_gt)} classes)" if len(shown) < len(with_gt) else ""
    fig = Figure(figsize=(5.5 * len(ious), 4.5))
    axes = fig.subplots(1, len(ious), squeeze=False)
    for ax, iou in zip(axes[0], ious):
        recall, precision, _ = curves(ev, iou)
        best = best_f1(ev, iou)
        for cat in shown:
            k = ev.params.catIds.index(cat)
            name = ev.cocoGt.cats[cat]["name"]
            ap = float(precision[:, k].mean())
            (line,) = ax.plot(recall, precision[:, k], label=f"{name} (AP {ap:.3f})")
            b = best[cat]
            if b["f1"] == 0:  # no true positive: no operating point
                continue
            ax.plot(b["recall"], b["precision"], "o", color=line.get_color())
            ax.annotate(f"F1 {b['f1']:.2f} @ {b['score']:.2f}", (b["recall"], b["precision"]),
                        textcoords="offset points", xytext=(4, 4), fontsize=7,
                        color=line.get_color())
        ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
               title=f"IoU {iou:.2f}{note}")
        ax.grid(alpha=0.3)
        if shown:
            ax.legend(fontsize=7, loc="lower left")
    fig.suptitle("precision-recall (COCOeval, 101 recall points); dot: best F1 @ score threshold",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return Path(path)
