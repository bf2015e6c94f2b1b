"""Checks shared by the annotation readers (COCO, VOC, YOLO) and the checked COCO they produce.

Every reader turns its files into `ImageRecord`s; `records_to_coco` cleans the boxes
(`clean_boxes`) and writes COCO JSON. What was fixed or skipped goes into one `Report`
per split, logged as one line. Bad input raises `AnnotationError` naming the file (and
line), or, with ``skip_bad``, is skipped and counted in the report.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

log = logging.getLogger(__name__)

# Image files the VOC and YOLO readers look for.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# How many offending file names (or skipped errors) a report line shows.
MAX_NAMES = 5


class AnnotationError(ValueError):
    """Bad annotation input: the message names the file, the line if known, and the problem.

    Attributes:
        file: The offending file.
        line: 1-based line number in ``file``, if the format has lines.
    """

    def __init__(self, file: str | Path, message: str, line: int | None = None) -> None:
        self.file, self.line = str(file), line
        where = self.file if line is None else f"{self.file}:{line}"
        super().__init__(f"{where}: {message}")


def clean_boxes(xyxy: np.ndarray, hw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clip boxes to their image and find the degenerate ones.

    A box is kept when its coordinates are finite and ``x2 > x1`` and ``y2 > y1``, both
    as given and after clipping to ``[0, W] x [0, H]`` (a box entirely outside the image
    clips to zero size and is dropped).

    Args:
        xyxy: ``(A, 4)`` boxes x1 y1 x2 y2 in pixels.
        hw: ``(A, 2)`` (H, W) of the image of each box.

    Returns:
        ``clipped`` (A, 4) float64 boxes clipped to their image, ``keep`` (A,) bool,
        ``was_clipped`` (A,) bool: kept and changed by clipping.
    """
    xyxy = np.asarray(xyxy, np.float64).reshape(-1, 4)  # (A, 4)
    hw = np.asarray(hw, np.float64).reshape(-1, 2)  # (A, 2)
    upper = np.stack([hw[:, 1], hw[:, 0], hw[:, 1], hw[:, 0]], axis=1)  # (A, 4) W H W H
    with np.errstate(invalid="ignore"):
        clipped = np.clip(xyxy, 0.0, upper)  # (A, 4)
        keep = (
            np.isfinite(xyxy).all(axis=1)
            & (xyxy[:, 2] > xyxy[:, 0])
            & (xyxy[:, 3] > xyxy[:, 1])
            & (clipped[:, 2] > clipped[:, 0])
            & (clipped[:, 3] > clipped[:, 1])
        )  # (A,)
    was_clipped = keep & (clipped != xyxy).any(axis=1)  # (A,)
    return clipped, keep, was_clipped


@dataclass
class Report:
    """What set-up fixed or skipped in one annotation source, logged once as one line.

    Attributes:
        source: What was read (an annotation file, or ``"voc ROOT split train"``).
        skip_bad: Skip and count bad input instead of raising.
        images: Images kept.
        boxes: Boxes kept.
        dropped: Degenerate boxes dropped.
        clipped: Boxes clipped to their image.
        fixed: Names of the first files with dropped or clipped boxes.
        skipped: Number of bad items skipped (``skip_bad``).
        errors: Messages of the first skipped items.
    """

    source: str
    skip_bad: bool = False
    images: int = 0
    boxes: int = 0
    dropped: int = 0
    clipped: int = 0
    fixed: list[str] = field(default_factory=list)
    skipped: int = 0
    errors: list[str] = field(default_factory=list)

    def bad(self, error: AnnotationError) -> None:
        """Raise ``error``, or with ``skip_bad`` count it (the caller then skips the item)."""
        if not self.skip_bad:
            raise error
        self.skipped += 1
        if len(self.errors) < MAX_NAMES:
            self.errors.append(str(error))

    def count_boxes(self, names: list[str], dropped: np.ndarray, clipped: np.ndarray) -> None:
        """Count dropped and clipped boxes; ``names[i]`` is the file of box ``i`` (in order)."""
        self.dropped += int(dropped.sum())
        self.clipped += int(clipped.sum())
        for i in np.flatnonzero(dropped | clipped):
            if len(self.fixed) >= MAX_NAMES:
                break
            if names[i] not in self.fixed:
                self.fixed.append(names[i])

    def line(self) -> str:
        """The one-line summary."""
        text = f"{self.source}: {self.images} images, {self.boxes} boxes"
        if self.dropped or self.clipped:
            text += (
                f"; dropped {self.dropped} degenerate boxes, clipped {self.clipped} "
                f"(first: {', '.join(self.fixed)})"
            )
        if self.skipped:
            text += f"; skipped {self.skipped} bad items (first: {'; '.join(self.errors)})"
        return text

    def log(self, logger: logging.Logger = log) -> None:
        """Log the summary: a warning if anything was dropped, clipped or skipped."""
        level = logging.WARNING if self.dropped or self.clipped or self.skipped else logging.INFO
        logger.log(level, "%s", self.line())

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def image_size(path: Path, annotation: str | Path) -> tuple[int, int]:
    """``(width, height)`` from the image file's header (the pixels are not decoded).

    Args:
        path: Image file.
        annotation: The annotation file that refers to it (named in errors).

    Raises:
        AnnotationError: If the image is missing or PIL cannot read it.
    """
    if not path.is_file():
        raise AnnotationError(annotation, f"image not found: {path}")
    try:
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, OSError) as e:
        raise AnnotationError(annotation, f"cannot read image {path}: {e}") from e


@dataclass
class ImageRecord:
    """One image and its boxes as read from VOC or YOLO files, before checking.

    Attributes:
        file_name: Image path relative to the dataset root (POSIX separators).
        width: Image width in pixels.
        height: Image height in pixels.
        boxes: ``(n, 4)`` float64 x1 y1 x2 y2 in pixels, as in the source.
        category_ids: ``(n,)`` category id of each box.
        crowd: ``(n,)`` bool, True for boxes ignored in training and evaluation.
        source: The annotation file (named in the report).
    """

    file_name: str
    width: int
    height: int
    boxes: np.ndarray
    category_ids: np.ndarray
    crowd: np.ndarray
    source: str


def records_to_coco(
    records: list[ImageRecord], categories: list[dict], report: Report
) -> dict:
    """Checked COCO dict: boxes clipped, degenerate ones dropped, counted in ``report``.

    Image ids are ``1..N`` in the order of ``records``; annotation ids ``1..A`` in image
    order, then file order. ``iscrowd`` is 1 for ``crowd`` boxes; ``area`` is ``w * h``
    of the clipped box (pycocotools uses it for the small/medium/large ranges).

    Args:
        records: One entry per image.
        categories: COCO categories ``[{"id", "name"}]``.
        report: Receives the image, box, dropped and clipped counts.

    Returns:
        ``{"images", "annotations", "categories"}``.
    """
    counts = [len(r.boxes) for r in records]
    xyxy = np.concatenate([r.boxes.reshape(-1, 4) for r in records] or [np.zeros((0, 4))])
    hw = np.repeat([[r.height, r.width] for r in records], counts, axis=0).reshape(-1, 2)
    clipped, keep, was_clipped = clean_boxes(xyxy, hw)  # (A, 4), (A,), (A,)
    names = [r.source for r, n in zip(records, counts) for _ in range(n)]
    report.count_boxes(names, ~keep, was_clipped)

    images, annotations, start = [], [], 0
    for image_id, (r, n) in enumerate(zip(records, counts), start=1):
        images.append(
            {"id": image_id, "file_name": r.file_name, "width": r.width, "height": r.height}
        )
        for j in range(n):
            if not keep[start + j]:
                continue
            x1, y1, x2, y2 = clipped[start + j].tolist()
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(r.category_ids[j]),
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": int(bool(r.crowd[j])),
                }
            )
        start += n
    report.images, report.boxes = len(images), len(annotations)
    return {"images": images, "annotations": annotations, "categories": categories}
