"""Pascal VOC reader: ``ROOT/Annotations/*.xml`` and ``ROOT/JPEGImages/``.

A split is the list of ids in ``ROOT/ImageSets/Main/<split>.txt``; split ``None`` means
every XML file in ``Annotations/``. The class list is given, or every ``<name>`` found
in ``Annotations/*.xml`` (all splits, so that train and val agree), sorted. Category
ids are ``1..K`` in class-list order.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from retina.data.validate import IMAGE_SUFFIXES, AnnotationError, ImageRecord, Report, image_size

# How `<difficult>1</difficult>` objects are used: "ignore" makes them iscrowd (no
# training target; pycocotools ignores detections on them), "keep" makes them ordinary.
DIFFICULT = ("ignore", "keep")
COORDS = ("xmin", "ymin", "xmax", "ymax")


def split_ids(root: Path, split: str | None) -> list[str]:
    """Image ids of a split, in file order (``split=None``: every XML stem, sorted).

    Raises:
        FileNotFoundError: If ``Annotations/`` or the split file is missing.
    """
    annotations = root / "Annotations"
    if not annotations.is_dir():
        raise FileNotFoundError(f"{annotations} not found: a VOC root holds Annotations/*.xml")
    if split is None:
        return sorted(p.stem for p in annotations.glob("*.xml"))
    split_file = root / "ImageSets" / "Main" / f"{split}.txt"
    if not split_file.is_file():
        raise FileNotFoundError(
            f"{split_file} not found: VOC split {split!r} is listed there "
            "(set the split to null to use every file in Annotations/)"
        )
    return [line.split()[0] for line in split_file.read_text().splitlines() if line.strip()]


def source_files(root: Path, split: str | None) -> list[Path]:
    """Every file the conversion depends on (for the cache key)."""
    files = sorted((root / "Annotations").glob("*.xml")) + sorted((root / "JPEGImages").glob("*"))
    if split is not None:
        files.append(root / "ImageSets" / "Main" / f"{split}.txt")
    return files


def parse_xml(xml_file: Path) -> ET.Element:
    """The root ``<annotation>`` element.

    Raises:
        AnnotationError: If the file is missing or not valid XML (names the line).
    """
    if not xml_file.is_file():
        raise AnnotationError(xml_file, "annotation file not found")
    try:
        return ET.parse(xml_file).getroot()
    except ET.ParseError as e:
        raise AnnotationError(xml_file, f"not valid XML: {e}", line=e.position[0]) from e


def collect_classes(root: Path, report: Report) -> list[str]:
    """Every object ``<name>`` in ``root/Annotations/*.xml``, sorted.

    Files that cannot be parsed raise, or with ``report.skip_bad`` are left out here
    (they are counted when their own split is read).
    """
    names = set()
    for xml_file in sorted((root / "Annotations").glob("*.xml")):
        try:
            tree = parse_xml(xml_file)
        except AnnotationError:
            if report.skip_bad:
                continue
            raise
        names.update((obj.findtext("name") or "").strip() for obj in tree.findall("object"))
    names.discard("")
    return sorted(names)


def _find_image(root: Path, image_id: str, filename: str | None) -> Path:
    """``JPEGImages/<filename>`` if it exists, else ``JPEGImages/<id>.<any image suffix>``."""
    folder = root / "JPEGImages"
    candidates = [folder / filename] if filename else []
    candidates += [folder / f"{image_id}{s}" for s in IMAGE_SUFFIXES]
    return next((p for p in candidates if p.is_file()), candidates[0])


def _size(tree: ET.Element, xml_file: Path) -> tuple[int, int]:
    """``(width, height)`` from ``<size>``."""
    try:
        width, height = int(tree.findtext("size/width")), int(tree.findtext("size/height"))
    except (TypeError, ValueError):
        width = height = 0
    if width <= 0 or height <= 0:
        raise AnnotationError(xml_file, "no <size> with positive integer <width> and <height>")
    return width, height


def _objects(
    tree: ET.Element, xml_file: Path, label_of: dict[str, int], difficult: str, one_based: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes ``(n, 4)`` xyxy, category ids ``(n,)`` and crowd flags ``(n,)`` of one file."""
    boxes, cats, crowd = [], [], []
    for i, obj in enumerate(tree.findall("object"), start=1):
        name = (obj.findtext("name") or "").strip()
        if name not in label_of:
            raise AnnotationError(
                xml_file, f"object {i} has class {name!r}, not in the class list {list(label_of)}"
            )
        try:
            box = [float(obj.findtext(f"bndbox/{k}")) for k in COORDS]
        except (TypeError, ValueError):
            raise AnnotationError(
                xml_file, f"object {i} ({name}) needs a <bndbox> with numeric {', '.join(COORDS)}"
            ) from None
        flag = (obj.findtext("difficult") or "0").strip() or "0"
        if flag not in ("0", "1"):
            raise AnnotationError(xml_file, f"object {i} has <difficult>{flag}</difficult>")
        if one_based:  # 1-based inclusive pixel indices -> 0-based pixel edges
            box[0] -= 1.0
            box[1] -= 1.0
        boxes.append(box)
        cats.append(label_of[name])
        crowd.append(flag == "1" and difficult == "ignore")
    return (
        np.asarray(boxes, np.float64).reshape(-1, 4),
        np.asarray(cats, np.int64),
        np.asarray(crowd, bool),
    )


def read_boxes(xml_file: Path, one_based: bool = False) -> np.ndarray:
    """Boxes of every object of one VOC XML file, whatever its class or ``<difficult>``.

    For annotations outside the ``Annotations/`` + ``JPEGImages/`` layout of `read_voc`
    (e.g. the flat deepforest data folder). Coordinates are read as in `read_voc`.

    Args:
        xml_file: The VOC annotation.
        one_based: Shift ``xmin``/``ymin`` by -1 (see `read_voc`).

    Returns:
        ``(n, 4)`` float64 boxes xyxy in image pixels, in file order.

    Raises:
        AnnotationError: If the file is missing or not valid XML, or an object has no
            numeric ``<bndbox>`` or a ``<difficult>`` other than 0/1.
    """
    tree = parse_xml(xml_file)
    label_of = {(obj.findtext("name") or "").strip(): 1 for obj in tree.findall("object")}
    boxes, _, _ = _objects(tree, xml_file, label_of, "keep", one_based)  # (n, 4)
    return boxes


def read_voc(
    root: str | Path,
    split: str | None,
    report: Report,
    classes: list[str] | None = None,
    difficult: str = "ignore",
    one_based: bool = False,
) -> tuple[list[dict], list[ImageRecord]]:
    """Read one split of a VOC dataset.

    Coordinates are taken as pixel edges (``xmax = W`` is the right border), as labelme
    and deepforest write them; ``one_based=True`` subtracts 1 from ``xmin``/``ymin`` for
    the original VOC devkit convention (1-based inclusive pixel indices).

    Args:
        root: Folder with ``Annotations/``, ``JPEGImages/`` and optionally ``ImageSets/Main/``.
        split: Split name, or None for every XML file.
        report: Receives skipped bad files (with ``report.skip_bad``).
        classes: Class names in label order; None collects them from the files.
        difficult: ``"ignore"`` or ``"keep"`` (see `DIFFICULT`).
        one_based: Shift ``xmin``/``ymin`` by -1 (see above).

    Returns:
        COCO categories and one `ImageRecord` per image, in split order.

    Raises:
        AnnotationError: For a bad file (invalid XML, no ``<size>``, unknown class,
            missing or unreadable image, ``<size>`` differing from the image) unless
            ``report.skip_bad``, which leaves that image out.
    """
    root = Path(root)
    if difficult not in DIFFICULT:
        raise ValueError(f"difficult={difficult!r}: expected one of {DIFFICULT}")
    ids = split_ids(root, split)
    classes = list(classes) if classes else collect_classes(root, report)
    if len(set(classes)) != len(classes):
        raise ValueError(f"the VOC class list has duplicates: {classes}")
    label_of = {name: cat_id for cat_id, name in enumerate(classes, start=1)}
    records = []
    for image_id in ids:
        xml_file = root / "Annotations" / f"{image_id}.xml"
        try:
            tree = parse_xml(xml_file)
            width, height = _size(tree, xml_file)
            path = _find_image(root, image_id, (tree.findtext("filename") or "").strip())
            if image_size(path, xml_file) != (width, height):
                raise AnnotationError(
                    xml_file, f"<size> says {width}x{height} but {path} is "
                    f"{'x'.join(map(str, image_size(path, xml_file)))} (WxH)"
                )
            boxes, cats, crowd = _objects(tree, xml_file, label_of, difficult, one_based)
        except AnnotationError as e:
            report.bad(e)
            continue
        file_name = path.relative_to(root).as_posix()
        records.append(
            ImageRecord(file_name, width, height, boxes, cats, crowd, f"Annotations/{xml_file.name}")
        )
    categories = [{"id": cat_id, "name": name} for name, cat_id in label_of.items()]
    return categories, records
