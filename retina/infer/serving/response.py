"""Detections as the JSON of ``POST /predict``.

Each detection is a COCO results entry, the numbers ``retina predict`` writes to
``results.json`` (``retina.training.coco_eval.to_coco_results``): ``bbox`` [x, y, w, h] in
the image's pixels, ``score``, ``category_id`` (the training dataset's), GFL's per-side
``spread`` [left, top, right, bottom] in pixels when the model has one; plus ``label``
(0..K-1) and ``name`` (the class name).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from retina.training.coco_eval import to_coco_results


def detections_json(det: dict[str, Tensor], class_names: Sequence[str],
                    cat_ids: Sequence[int]) -> list[dict[str, Any]]:
    """One image's detections (``boxes`` x1y1x2y2, ``scores``, ``labels``, maybe ``spread``)
    as JSON-able entries, in their order."""
    entries = to_coco_results([0], [det], list(cat_ids))
    for entry, label in zip(entries, det["labels"].tolist()):
        del entry["image_id"]
        entry["label"] = int(label)
        entry["name"] = class_names[int(label)]
    return entries


def prediction_json(det: dict[str, Tensor], class_names: Sequence[str], cat_ids: Sequence[int],
                    width: int, height: int, time_ms: float) -> dict[str, Any]:
    """The body of a ``POST /predict`` answer."""
    detections = detections_json(det, class_names, cat_ids)
    return {"image": {"width": width, "height": height}, "count": len(detections),
            "detections": detections, "time_ms": round(time_ms, 2)}
