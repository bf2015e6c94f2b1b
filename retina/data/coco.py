"""COCO-format detection dataset: a COCO JSON file and a folder of images."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image as PILImage
from pycocotools.coco import COCO
from torch.utils.data import Dataset
from torchvision import tv_tensors

from retina.data.cache import decode_cache_file, decoded_sizes
from retina.data.validate import AnnotationError, Report, clean_boxes

log = logging.getLogger(__name__)

Target = dict[str, Any]


def load_coco(ann_file: str | Path) -> COCO:
    """Load a COCO annotation file with errors that name the file.

    Args:
        ann_file: Path of the COCO JSON file.

    Returns:
        An indexed ``pycocotools.coco.COCO``.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If the file is not valid JSON, lacks ``images`` / ``categories``, has an
            entry without the keys pycocotools indexes it by, or two categories with one id.
    """
    ann_file = Path(ann_file)
    if not ann_file.is_file():
        raise FileNotFoundError(f"COCO annotation file not found: {ann_file}")
    try:
        with ann_file.open() as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(
            f"{ann_file} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}"
        ) from e
    if not isinstance(data, dict) or not {"images", "categories"} <= data.keys():
        raise ValueError(f"{ann_file} is not a COCO file: it needs 'images' and 'categories'")
    data.setdefault("annotations", [])
    _check_entries(ann_file, data)
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    return coco


# The keys pycocotools' index reads from every entry (a missing one is a KeyError there).
REQUIRED_KEYS = {"images": ("id",), "annotations": ("id", "image_id", "category_id"),
                 "categories": ("id", "name")}


def repeated(entries: Iterable[dict], key: str = "id") -> dict[Any, list[dict]]:
    """``{value: entries}`` of the ``key`` values that more than one entry has, in first-seen
    order."""
    groups = defaultdict(list)
    for entry in entries:
        groups[entry[key]].append(entry)
    return {value: group for value, group in groups.items() if len(group) > 1}


def _check_entries(ann_file: Path, data: dict) -> None:
    """Errors pycocotools would not report: an entry without a key it indexes by (a bare
    KeyError inside pycocotools), two categories under one id (it keeps the last)."""
    for section, keys in REQUIRED_KEYS.items():
        entries = data[section]
        if not isinstance(entries, list):
            raise ValueError(f"{ann_file}: '{section}' must be a list")
        for i, entry in enumerate(entries):
            missing = [k for k in keys if not isinstance(entry, dict) or k not in entry]
            if missing:
                raise ValueError(f"{ann_file}: {section}[{i}] has no {', '.join(missing)}: "
                                 f"{str(entry)[:200]}")
    for cat_id, cats in repeated(data["categories"]).items():
        raise ValueError(f"{ann_file}: category id {cat_id} is listed {len(cats)} times "
                         f"({[c['name'] for c in cats]}); pycocotools would keep only the last")


def rgb_array(im: PILImage.Image) -> np.ndarray:
    """A PIL image as 8-bit RGB: ``(H, W, 3)`` uint8.

    Grayscale, gray+alpha, RGBA, palette and CMYK images are converted to RGB (alpha is
    dropped); 16-bit grayscale is scaled to 8 bits.
    """
    if im.mode.startswith("I"):  # 16-bit grayscale ("I;16", "I;16B", "I"): 0..65535
        gray = np.asarray(im, dtype=np.float64)  # (H, W)
        gray = np.clip(np.rint(gray * (255 / 65535)), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)  # (H, W, 3)
    return np.array(im.convert("RGB"))  # (H, W, 3) uint8


def read_rgb(path: str | Path) -> torch.Tensor:
    """Read an image file as 8-bit RGB with PIL (converted as :func:`rgb_array` says).

    EXIF orientation is not applied, so the pixel grid matches the ``width``/``height`` of
    the annotation file.

    Args:
        path: Image file.

    Returns:
        ``(3, H, W)`` uint8 tensor.
    """
    with PILImage.open(path) as im:
        rgb = rgb_array(im)  # (H, W, 3)
    return torch.from_numpy(rgb).permute(2, 0, 1).contiguous()  # (3, H, W)


def _is_bbox(bbox: object) -> bool:
    """A COCO ``bbox``: four numbers (their values are checked by `clean_boxes`)."""
    return (
        isinstance(bbox, list | tuple)
        and len(bbox) == 4
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in bbox)
    )


def _is_size(value: object) -> bool:
    """A COCO image ``width``/``height``: a positive whole number (``640.0`` included)."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return number and value > 0 and float(value).is_integer()


class CocoDetection(Dataset):
    """Detection dataset over a COCO JSON file and an image folder.

    Category ids are mapped to contiguous labels ``0..K-1`` in sorted category-id order.
    Targets exclude ``iscrowd=1`` annotations; boxes with ``w <= 0`` or ``h <= 0`` (also
    after clipping) are dropped and boxes crossing the image border are clipped to it,
    counted in one log line. An image entry without ``file_name`` or a positive
    ``width``/``height``, an annotation with an unknown category or image id or a
    malformed ``bbox``, an image or annotation id used twice (pycocotools would keep one of
    them), a missing image file, and an image that does not decode or whose size is not the
    one in the annotation file are errors; with ``skip_bad`` they are skipped and counted
    instead (a bad annotation removes its whole image, so that no image is trained on with a
    box missing). All of this is computed once at construction, every image decoded once
    (with ``cache_dir``, remembered there while the file's size and mtime are unchanged, see
    `retina.data.cache`); images without boxes are kept.

    Attributes:
        ann_file: The COCO annotation file (for evaluation against the same file).
        image_dir: Folder of the images (``file_name`` is relative to it).
        transforms: Optional callable ``(image, target) -> (image, target)``.
        cat_ids: Category id of each label, ``cat_ids[label]``.
        class_names: Category name of each label.
        num_classes: Number of categories K.
        image_ids: COCO image id of each dataset index, sorted.
        report: What set-up dropped, clipped or skipped (`retina.data.validate.Report`).

    Example:
        >>> ds = CocoDetection("annotations/val.json", "val")  # doctest: +SKIP
        >>> image, target = ds[0]  # (3, H, W) uint8, {"boxes": (n, 4) xyxy, "labels": (n,)...}
    """

    def __init__(
        self,
        ann_file: str | Path,
        image_dir: str | Path,
        transforms: Callable[[tv_tensors.Image, Target], tuple[Any, Target]] | None = None,
        skip_bad: bool = False,
        cache_dir: str | Path | None = None,
    ) -> None:
        self.ann_file = Path(ann_file)
        self.image_dir = Path(image_dir)
        self.transforms = transforms
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.report = Report(str(self.ann_file), skip_bad)

        coco = load_coco(self.ann_file)
        self.cat_ids: list[int] = sorted(coco.cats)
        self.class_names: list[str] = [coco.cats[c]["name"] for c in self.cat_ids]
        self.num_classes = len(self.cat_ids)
        bad = self._bad_images(coco)
        bad |= self._undecodable(coco, bad)
        self.image_ids: list[int] = sorted(i for i in coco.imgs if i not in bad)
        images = [coco.imgs[i] for i in self.image_ids]
        self.file_names: list[str] = [im["file_name"] for im in images]
        sizes = [[im["height"], im["width"]] for im in images]
        self.sizes = np.array(sizes, np.int64).reshape(-1, 2)  # (N, 2) (H, W) from the file
        self._index_boxes(coco)
        self.report.images, self.report.boxes = len(self.image_ids), len(self._labels)
        self.report.log(log)

    def _bad_images(self, coco: COCO) -> set[int]:
        """Ids of images to leave out (with ``skip_bad``); raises on the first bad entry
        otherwise. Bad: an image or annotation id used twice, no ``file_name`` or positive int
        ``width``/``height``, an annotation with an unknown category or a malformed ``bbox``,
        a missing image file."""
        bad = set()

        def flag(image_id: int | None, message: str, *more_ids: int) -> None:
            self.report.bad(AnnotationError(self.ann_file, message))
            bad.update(i for i in (image_id, *more_ids) if i is not None)

        for image_id, images in repeated(coco.dataset["images"]).items():
            files = [im.get("file_name") for im in images]
            flag(image_id, f"image id {image_id} is listed {len(images)} times in images "
                           f"({files}); pycocotools would keep only the last, and its "
                           f"{len(coco.imgToAnns[image_id])} annotations could belong to any")
        for ann_id, anns in repeated(coco.dataset["annotations"]).items():
            image_ids = list(dict.fromkeys(a["image_id"] for a in anns))
            flag(None, f"annotation id {ann_id} is used {len(anns)} times (image ids "
                       f"{image_ids}); pycocotools would evaluate only one of them", *image_ids)
        for image_id, im in coco.imgs.items():
            if not isinstance(im.get("file_name"), str) or not all(
                _is_size(im.get(k)) for k in ("width", "height")
            ):
                flag(image_id, f"image id {image_id} needs file_name and positive integer "
                               f"width and height, has {im!r}")
        for ann in coco.dataset["annotations"]:
            ann_id, image_id = ann.get("id"), ann.get("image_id")
            if image_id not in coco.imgs:
                flag(None, f"annotation id {ann_id} refers to image_id {image_id}, which is "
                           "not in images")
            elif ann.get("category_id") not in coco.cats:
                flag(image_id, f"annotation id {ann_id} has category_id "
                               f"{ann.get('category_id')}, which is not in categories "
                               f"{self.cat_ids}")
            elif not _is_bbox(ann.get("bbox")):
                flag(image_id, f"annotation id {ann_id} has bbox {ann.get('bbox')!r}")
        missing = [
            i for i, im in coco.imgs.items()
            if i not in bad and not (self.image_dir / im["file_name"]).is_file()
        ]  # fmt: skip
        if missing and not self.report.skip_bad:
            first = ", ".join(str(self.image_dir / coco.imgs[i]["file_name"]) for i in missing[:5])
            raise FileNotFoundError(
                f"{len(missing)} of {len(coco.imgs)} images listed in {self.ann_file} "
                f"are missing, first: {first}"
            )
        for i in missing:
            flag(i, f"image not found: {self.image_dir / coco.imgs[i]['file_name']}")
        return bad

    def _undecodable(self, coco: COCO, bad: set[int]) -> set[int]:
        """Ids of the images (not already in ``bad``) that PIL cannot decode or whose pixel size
        is not the ``width``/``height`` of the annotation file; raises on the first without
        ``skip_bad``."""
        ids = sorted(i for i in coco.imgs if i not in bad)
        paths = [self.image_dir / coco.imgs[i]["file_name"] for i in ids]
        cache = decode_cache_file(self.cache_dir, self.image_dir) if self.cache_dir else None
        undecodable = set()
        for image_id, path, size in zip(ids, paths, decoded_sizes(paths, cache)):
            w, h = coco.imgs[image_id]["width"], coco.imgs[image_id]["height"]
            if isinstance(size, Exception):
                message = f"cannot decode {path}: {type(size).__name__}: {size}"
            elif size != (w, h):
                message = f"{path} is {size[0]}x{size[1]} (WxH), the annotation file says {w}x{h}"
            else:
                continue
            self.report.bad(AnnotationError(self.ann_file, f"image id {image_id}: {message}"))
            undecodable.add(image_id)
        return undecodable

    def _index_boxes(self, coco: COCO) -> None:
        """Clip boxes and drop degenerate ones; store them as one array with per-image offsets."""
        index_of_image = {image_id: i for i, image_id in enumerate(self.image_ids)}
        label_of_cat = {c: label for label, c in enumerate(self.cat_ids)}
        rows, labels, bboxes = [], [], []
        for ann in coco.dataset["annotations"]:
            if ann.get("iscrowd", 0) or ann.get("image_id") not in index_of_image:
                continue  # crowd, or an image left out by _bad_images
            rows.append(index_of_image[ann["image_id"]])
            labels.append(label_of_cat[ann["category_id"]])
            bboxes.append(ann["bbox"])

        row = np.asarray(rows, np.int64)  # (A,)
        xywh = np.asarray(bboxes, np.float64).reshape(-1, 4)  # (A, 4)
        xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)  # (A, 4)
        clipped, valid, was_clipped = clean_boxes(xyxy, self.sizes[row])  # (A, 4), (A,), (A,)
        by_image = np.argsort(row, kind="stable")  # name files in dataset order
        self.report.count_boxes(
            [self.file_names[i] for i in row[by_image]], ~valid[by_image], was_clipped[by_image]
        )

        order = np.argsort(row[valid], kind="stable")  # group boxes by image, keep file order
        row = row[valid][order]
        self._boxes = clipped[valid][order].astype(np.float32)  # (A', 4) xyxy
        self._labels = np.asarray(labels, np.int64)[valid][order]  # (A',)
        counts = np.bincount(row, minlength=len(self.image_ids))  # (N,)
        self._offsets = np.concatenate([[0], np.cumsum(counts)])  # (N + 1,)

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> tuple[Any, Target]:
        """Read one image and its target.

        Returns:
            ``(image, target)`` before transforms: image ``tv_tensors.Image`` (3, H, W)
            uint8 RGB; target with ``boxes`` BoundingBoxes (n, 4) XYXY float32 in pixels,
            ``labels`` (n,) int64 in ``0..K-1``, ``image_id`` int and ``orig_size`` (H, W).

        Raises:
            FileNotFoundError: If the image file disappeared (names path and image id).
            OSError: If the image no longer decodes (names path and image id).
            ValueError: If the image size differs from the one in the annotation file.
        """
        image_id = self.image_ids[index]
        path = self.image_dir / self.file_names[index]
        if not path.is_file():
            raise FileNotFoundError(f"image file not found: {path} (image id {image_id})")
        try:
            image = tv_tensors.Image(read_rgb(path))  # (3, H, W) uint8
        except Exception as err:  # the file changed since set-up: say which one
            raise OSError(f"cannot decode {path} (image id {image_id}): "
                          f"{type(err).__name__}: {err}") from err
        size = tuple(image.shape[-2:])
        if size != tuple(self.sizes[index].tolist()):
            raise ValueError(
                f"{path} (image id {image_id}) is {size[1]}x{size[0]} (WxH) but "
                f"{self.ann_file} says {self.sizes[index][1]}x{self.sizes[index][0]}"
            )
        start, end = self._offsets[index], self._offsets[index + 1]
        target = {
            "boxes": tv_tensors.BoundingBoxes(
                torch.from_numpy(self._boxes[start:end].copy()), format="XYXY", canvas_size=size
            ),  # (n, 4)
            "labels": torch.from_numpy(self._labels[start:end].copy()),  # (n,)
            "image_id": image_id,
            "orig_size": size,
        }
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({len(self)} images, {len(self._labels)} boxes, "
            f"{self.num_classes} classes, ann_file={str(self.ann_file)!r})"
        )
