"""What a dataset holds, as read from its files: counts per split and class, images without
boxes, boxes outside their image or degenerate, duplicate image files; and its boxes at the
training input size. The facts ``retina check`` (:mod:`retina.training.check`) starts from.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from retina.data.coco import CocoDetection, load_coco
from retina.data.transforms import resized_size
from retina.data.validate import MAX_NAMES, clean_boxes


@dataclass
class SplitCounts:
    """One split's annotation file, counted as written.

    Attributes:
        name: ``train`` or ``val``.
        ann_file: The COCO annotation file.
        images: Images it lists.
        annotations: Annotations it lists (every one: crowd, degenerate and outside included).
        per_class: Annotations per category name, crowd ones included.
        crowd: ``iscrowd=1`` annotations (ignored in training, matched leniently in evaluation).
        without_boxes: Images with no annotation that training uses (none, or crowd only).
        degenerate: Annotations whose box has no area as written or once clipped to its image
            (non-finite, ``w <= 0``, ``h <= 0``, or wholly outside): dropped by training.
        outside: Annotations whose box crosses the image border: clipped by training.
        examples: The first file names of each finding (``without_boxes``, ``degenerate``,
            ``outside``).
    """

    name: str
    ann_file: str
    images: int = 0
    annotations: int = 0
    per_class: dict[str, int] = field(default_factory=dict)
    crowd: int = 0
    without_boxes: int = 0
    degenerate: int = 0
    outside: int = 0
    examples: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def count_split(name: str, ann_file: str | Path) -> SplitCounts:
    """Count one split's COCO annotation file (boxes judged by :func:`clean_boxes`, the check
    training applies)."""
    coco = load_coco(ann_file)
    data = coco.dataset
    counts = SplitCounts(name, str(ann_file), images=len(data["images"]),
                         annotations=len(data["annotations"]))
    names = {c["id"]: c["name"] for c in data["categories"]}
    per_class = {names[c]: 0 for c in sorted(names)}  # label order
    images = {im["id"]: im for im in data["images"]}
    used = set()
    examples: dict[str, list[str]] = defaultdict(list)

    def note(kind: str, image_id) -> None:
        file = str(images.get(image_id, {}).get("file_name", f"image id {image_id}"))
        if len(examples[kind]) < MAX_NAMES and file not in examples[kind]:
            examples[kind].append(file)

    for ann in data["annotations"]:
        cat = names.get(ann.get("category_id"), str(ann.get("category_id")))
        per_class[cat] = per_class.get(cat, 0) + 1
        image = images.get(ann.get("image_id"))
        if ann.get("iscrowd", 0):
            counts.crowd += 1
            continue
        x, y, w, h = (list(ann.get("bbox") or []) + [float("nan")] * 4)[:4]
        hw = [image.get("height", 0), image.get("width", 0)] if image else [0, 0]
        _, keep, clipped = clean_boxes(np.array([[x, y, x + w, y + h]], np.float64),
                                       np.array([hw], np.float64))
        if not keep[0]:
            counts.degenerate += 1
            note("degenerate", ann.get("image_id"))
            continue
        if clipped[0]:
            counts.outside += 1
            note("outside", ann.get("image_id"))
        used.add(ann.get("image_id"))
    for image_id in images:
        if image_id not in used:
            counts.without_boxes += 1
            note("without_boxes", image_id)
    counts.per_class = per_class
    counts.examples = dict(examples)
    return counts


def duplicate_files(paths: list[Path]) -> list[list[Path]]:
    """Groups of byte-identical files among ``paths`` (a path listed twice counts once); only
    files that share a size are read."""
    by_size = defaultdict(list)
    for path in dict.fromkeys(Path(p) for p in paths):
        if path.is_file():
            by_size[path.stat().st_size].append(path)
    groups = defaultdict(list)
    for same_size in by_size.values():
        if len(same_size) < 2:
            continue
        for path in same_size:
            groups[hashlib.sha1(path.read_bytes()).hexdigest()].append(path)
    return [group for group in groups.values() if len(group) > 1]


def evenly_spaced(n: int, limit: int | None) -> np.ndarray:
    """Indices of ``limit`` of ``n`` items, evenly spaced, first and last included (all of
    them when ``limit`` is None or not smaller than ``n``)."""
    if limit is None or n <= limit:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, limit).round().astype(np.int64))


@dataclass
class InputBoxes:
    """A dataset's training boxes at the training input size, image by image.

    Attributes:
        image_index: (A,) the dataset index of each box's image.
        boxes: (A, 4) float32 x1y1x2y2 in input pixels (after the resize).
        labels: (A,) long.
        input_hw: (N, 2) each image's (h, w) after the resize.
        images: The dataset indices measured (all, or an evenly spaced subset).
        vanished: (A,) bool: less than a pixel wide or high after the resize (training's
            ``SanitizeBoundingBoxes`` drops them).
    """

    image_index: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    input_hw: np.ndarray
    images: np.ndarray
    vanished: np.ndarray


def boxes_at_input(dataset: CocoDetection, size: int | None = None, min_size: int | None = None,
                   max_size: int | None = None, resize: str = "antialias",
                   max_images: int | None = None) -> InputBoxes:
    """The boxes training uses (crowd and degenerate left out, clipped), each scaled as the
    evaluation resize scales its image (the nominal training size: no scale jitter).

    Args:
        dataset: A set-up dataset.
        size, min_size, max_size, resize: The data config's resize (see
            :mod:`retina.data.transforms`).
        max_images: Measure at most this many images, evenly spaced (None: all).
    """
    n = len(dataset)
    images = evenly_spaced(n, max_images)
    sizes = dataset.sizes  # (N, 2) (H, W)
    out_hw: dict[tuple[int, int], tuple[int, int]] = {}
    input_hw = np.zeros((n, 2), np.int64)
    rows, boxes, labels = [], [], []
    for i in images:
        hw = tuple(int(v) for v in sizes[i])
        if hw not in out_hw:
            out_hw[hw] = resized_size(*hw, size, min_size, max_size, resize)
        input_hw[i] = out_hw[hw]
        start, end = dataset._offsets[i], dataset._offsets[i + 1]
        scale = np.array([out_hw[hw][1] / hw[1], out_hw[hw][0] / hw[0]] * 2, np.float32)
        boxes.append(dataset._boxes[start:end] * scale)  # (n_i, 4)
        labels.append(dataset._labels[start:end])
        rows.append(np.full(end - start, i, np.int64))
    boxes = np.concatenate(boxes or [np.zeros((0, 4), np.float32)]).reshape(-1, 4)
    wh = boxes[:, 2:] - boxes[:, :2]
    return InputBoxes(np.concatenate(rows or [np.zeros(0, np.int64)]), boxes,
                      np.concatenate(labels or [np.zeros(0, np.int64)]), input_hw, images,
                      (wh < 1).any(axis=1))
