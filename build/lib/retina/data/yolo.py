"""YOLO reader (Ultralytics layout): ``ROOT/data.yaml``, ``images/<split>/``, ``labels/<split>/``.

``data.yaml`` gives the class names (``names: [a, b]`` or ``names: {0: a, 1: b}``) and,
optionally, where each split's images are (``train: images/train``; a folder, a ``.txt``
list of image paths, or a list of those; relative to ROOT). Without a ``<split>`` key the
images are in ``ROOT/images/<split>``. Each image's label file is its path with the last
``images`` folder replaced by ``labels`` and the suffix by ``.txt``; it holds one line
``class cx cy w h`` per box, the box centre and size normalised by the image width and
height. An image without a label file has no boxes. Category ids are the class indices.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import yaml

from retina.data.validate import IMAGE_SUFFIXES, AnnotationError, ImageRecord, Report, image_size


def load_data_yaml(root: Path) -> tuple[Path, dict, dict[int, str]]:
    """``data.yaml`` of ``root``: its path, its content and the class names by index.

    Raises:
        FileNotFoundError: If there is no ``root/data.yaml``.
        AnnotationError: If it is not valid YAML or has no usable ``names``.
    """
    yaml_file = root / "data.yaml"
    if not yaml_file.is_file():
        raise FileNotFoundError(
            f"{yaml_file} not found: a YOLO root needs data.yaml with the class names "
            "(names: [name0, name1, ...])"
        )
    try:
        cfg = yaml.safe_load(yaml_file.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise AnnotationError(yaml_file, f"not valid YAML: {e}", line=line) from e
    names = cfg.get("names") if isinstance(cfg, dict) else None
    if isinstance(names, list):
        names = dict(enumerate(names))
    if not isinstance(names, dict) or not names or not all(isinstance(k, int) for k in names):
        raise AnnotationError(
            yaml_file, "needs names: a list of class names, or a mapping {index: name}"
        )
    names = {k: str(v) for k, v in sorted(names.items())}
    if "nc" in cfg and cfg["nc"] != len(names):
        raise AnnotationError(yaml_file, f"nc: {cfg['nc']} but names has {len(names)} classes")
    return yaml_file, cfg, names


def _resolve(root: Path, entry: str) -> Path:
    """A data.yaml path relative to ``root``; leading ``../`` are dropped if that is what
    exists (Roboflow exports write ``train: ../train/images`` next to ``train/``)."""
    path = Path(entry)
    if path.is_absolute():
        return path
    stripped = Path(*[p for p in path.parts if p != ".."] or ["."])
    return next((p for p in (root / path, root / stripped) if p.exists()), root / path)


def split_images(root: Path, cfg: dict, split: str) -> list[Path]:
    """Image files of ``split``, sorted.

    Raises:
        FileNotFoundError: If a listed folder or list file does not exist.
    """
    entries = cfg.get(split) or f"images/{split}"
    images: list[Path] = []
    for entry in entries if isinstance(entries, list) else [entries]:
        path = _resolve(root, str(entry))
        if path.is_dir():
            images += [p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES]
        elif path.is_file():  # a list of image paths, relative to the list's folder
            lines = [ln.strip() for ln in path.read_text().splitlines()]
            images += [Path(os.path.normpath(path.parent / ln)) for ln in lines if ln]
        else:
            raise FileNotFoundError(
                f"{path} not found: the images of YOLO split {split!r} (data.yaml {split}: "
                f"{cfg.get(split, '(not set, default images/' + split + ')')})"
            )
    return sorted(images)


def label_file(image: Path) -> Path:
    """``.../images/<rest>/x.jpg`` -> ``.../labels/<rest>/x.txt`` (the last ``images``)."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def source_files(root: Path, split: str) -> list[Path]:
    """Every file the conversion depends on (for the cache key)."""
    yaml_file, cfg, _ = load_data_yaml(root)
    images = split_images(root, cfg, split)
    labels = [p for p in map(label_file, images) if p.is_file()]
    return [yaml_file, *images, *labels]


def read_labels(
    txt: Path, names: dict[int, str], width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes ``(n, 4)`` xyxy in pixels and class indices ``(n,)`` of one label file.

    Raises:
        AnnotationError: Naming file and line, for a line without 5 fields, a class
            index that is not an integer in ``names``, or a non-numeric coordinate.
    """
    boxes, cats = [], []
    for number, line in enumerate(txt.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 5:
            raise AnnotationError(
                txt, f"{len(fields)} fields, expected 5 (class cx cy w h)", line=number
            )
        try:
            cls = int(fields[0])
        except ValueError:
            raise AnnotationError(
                txt, f"class index {fields[0]!r} is not an integer", line=number
            ) from None
        if cls not in names:
            raise AnnotationError(
                txt, f"class index {cls} is not in data.yaml names {list(names)}", line=number
            )
        try:
            cx, cy, w, h = map(float, fields[1:])
        except ValueError:
            raise AnnotationError(txt, f"non-numeric box {fields[1:]}", line=number) from None
        if not all(map(math.isfinite, (cx, cy, w, h))):
            raise AnnotationError(txt, f"non-finite box {fields[1:]}", line=number)
        boxes.append(
            [(cx - w / 2) * width, (cy - h / 2) * height,
             (cx + w / 2) * width, (cy + h / 2) * height]
        )  # fmt: skip
        cats.append(cls)
    return np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(cats, np.int64)


def read_yolo(
    root: str | Path, split: str, report: Report
) -> tuple[list[dict], list[ImageRecord]]:
    """Read one split of a YOLO dataset.

    Args:
        root: Folder with ``data.yaml``.
        split: Split name (a key of data.yaml, or a folder ``images/<split>``).
        report: Receives skipped bad images (with ``report.skip_bad``).

    Returns:
        COCO categories and one `ImageRecord` per image, sorted by path.

    Raises:
        AnnotationError: For a bad label line or a missing/unreadable image, unless
            ``report.skip_bad``, which leaves that image out.
    """
    root = Path(root)
    _, cfg, names = load_data_yaml(root)
    records = []
    for image in split_images(root, cfg, split):
        txt = label_file(image)
        try:
            width, height = image_size(image, txt if txt.is_file() else image)
            if txt.is_file():
                boxes, cats = read_labels(txt, names, width, height)
            else:
                boxes, cats = np.zeros((0, 4)), np.zeros(0, np.int64)
        except AnnotationError as e:
            report.bad(e)
            continue
        file_name = Path(os.path.relpath(image, root)).as_posix()
        crowd = np.zeros(len(cats), bool)
        source = Path(os.path.relpath(txt, root)).as_posix()
        records.append(ImageRecord(file_name, width, height, boxes, cats, crowd, source))
    categories = [{"id": k, "name": v} for k, v in names.items()]
    return categories, records
