"""COCO results files: read and check them before pycocotools sees them, so that a bad entry
is an error naming it (its index and what is wrong), not an assertion deep in ``loadRes``."""

from __future__ import annotations

import json
import math
from pathlib import Path

from pycocotools.coco import COCO


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _problem(entry: object, coco_gt: COCO, with_spread: bool) -> str | None:
    """What is wrong with one results entry, or None."""
    if not isinstance(entry, dict):
        return f"not an object but {type(entry).__name__}"
    missing = [k for k in ("image_id", "category_id", "bbox", "score") if k not in entry]
    if missing:
        return f"missing {', '.join(missing)}"
    if entry["image_id"] not in coco_gt.imgs:
        return f"unknown image_id {entry['image_id']!r} (not an image of the annotation file)"
    if entry["category_id"] not in coco_gt.cats:
        return f"unknown category_id {entry['category_id']!r} (categories: {sorted(coco_gt.cats)})"
    bbox = entry["bbox"]
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
        return f"bbox {bbox!r} is not 4 finite numbers [x, y, w, h]"
    if bbox[2] < 0 or bbox[3] < 0:
        return f"bbox {bbox!r} has a negative width or height"
    if not _is_number(entry["score"]):
        return f"score {entry['score']!r} is not a finite number"
    if with_spread != ("spread" in entry):
        return "has no spread while the first entry has one" if with_spread else (
            "has a spread while the first entry has none")
    spread = entry.get("spread", [0.0] * 4)
    if not (isinstance(spread, list) and len(spread) == 4 and all(_is_number(v) for v in spread)):
        return f"spread {spread!r} is not 4 finite numbers (left, top, right, bottom)"
    return None


def check_results(results: object, coco_gt: COCO, source: str = "results") -> list[dict]:
    """COCO results entries checked against the annotation file they are scored on.

    Args:
        results: the parsed file: a list of ``{"image_id", "category_id", "bbox": [x, y, w, h],
            "score"}`` (and ``"spread"``, 4 numbers, on all entries or none).
        coco_gt: the ground truth.
        source: how errors name the results (a file name).

    Returns:
        the entries with only those fields, ids as ``int`` and numbers as ``float``.

    Raises:
        ValueError: the first bad entry, e.g. ``results.json entry 3: unknown image_id 99
            (...)``.
    """
    if not isinstance(results, list):
        raise ValueError(f"{source}: expected a list of detections, got {type(results).__name__}")
    with_spread = bool(results) and isinstance(results[0], dict) and "spread" in results[0]
    clean = []
    for i, entry in enumerate(results):
        problem = _problem(entry, coco_gt, with_spread)
        if problem:
            raise ValueError(f"{source} entry {i}: {problem}")
        out = {"image_id": int(entry["image_id"]), "category_id": int(entry["category_id"]),
               "bbox": [float(v) for v in entry["bbox"]], "score": float(entry["score"])}
        if with_spread:
            out["spread"] = [float(v) for v in entry["spread"]]
        clean.append(out)
    return clean


def load_results(path: str | Path, coco_gt: COCO) -> list[dict]:
    """A COCO results JSON file, checked by :func:`check_results`.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not JSON, or a bad entry; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"results file not found: {path}")
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(
            f"{path} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}") from e
    return check_results(results, coco_gt, source=str(path))
