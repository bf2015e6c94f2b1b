"""Cut large annotated images into overlapping training tiles, written as checked COCO.

    python -m retina.data.tile format=voc root=DIR out=DIR [split=train] [tile=400] [overlap=0.25]
    python -m retina.data.tile format=yolo root=DIR split=train out=DIR
    python -m retina.data.tile format=coco ann=FILE.json images=DIR out=DIR [min_visible=0.5]

Writes ``out/images/<image>_x<x0>_y<y0>.png`` (the source image's path without its
suffix, then the tile's top-left corner in source pixels) and ``out/annotations.json``;
train on them with ``data=coco data.train_ann=out/annotations.json
data.train_images=out/images``. A box goes to every tile that holds at least
``min_visible`` of its area, clipped to the tile; the slivers below that are dropped and
counted. Tiles without boxes are left out unless ``keep_empty=true``. Options are
``key=value`` like ``retina.predict`` (parsed with OmegaConf).

The windows (:func:`windows`) are the same grid that sliced prediction runs
(``retina.infer.sliced``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from retina.cli import key_value_command
from retina.data.coco import load_coco, rgb_array
from retina.data.validate import ImageRecord, Report, records_to_coco
from retina.options import TileOptions

log = logging.getLogger(__name__)

Window = tuple[int, int, int, int]  # x0, y0, x1, y1 in source pixels; x1, y1 exclusive
# "shift": the last window of a row (column) is moved in to end at the border, so every
# window is tile x tile (unless the image is smaller); "cut": windows keep their step and
# the last one is cut at the border (smaller).
EDGES = ("shift", "cut")


def starts(length: int, tile: int, step: int, edge: str = "shift") -> list[int]:
    """Start of each window along one side of ``length`` pixels (the last reaches the end)."""
    if edge not in EDGES:
        raise ValueError(f"edge={edge!r}: expected one of {EDGES}")
    out, x = [], 0
    while True:
        if edge == "shift":
            x = max(0, min(x, length - tile))
        out.append(x)
        if x + tile >= length:
            return out
        x += step


def windows(width: int, height: int, tile: int, overlap: float = 0.0,
            edge: str = "shift") -> list[Window]:
    """Overlapping ``tile`` x ``tile`` windows covering an image, row by row.

    Args:
        width: Image width in pixels.
        height: Image height in pixels.
        tile: Window side in pixels.
        overlap: Fraction of ``tile`` shared by neighbouring windows, in [0, 1); the step
            is ``round(tile * (1 - overlap))``.
        edge: ``"shift"`` or ``"cut"`` (see :data:`EDGES`). With ``overlap=0`` and
            ``"cut"`` the windows are the plain grid of step ``tile`` from (0, 0).

    Returns:
        ``(x0, y0, x1, y1)`` of each window, clipped to the image.
    """
    if tile < 1 or not 0 <= overlap < 1:
        raise ValueError(f"tile={tile}, overlap={overlap}: need tile >= 1 and 0 <= overlap < 1")
    step = max(1, round(tile * (1 - overlap)))
    xs, ys = starts(width, tile, step, edge), starts(height, tile, step, edge)
    return [(x, y, min(x + tile, width), min(y + tile, height)) for y in ys for x in xs]


def crop_boxes(boxes: np.ndarray, window: Window, min_visible: float = 0.5
               ) -> tuple[np.ndarray, np.ndarray]:
    """The boxes a window sees, clipped to it, in window pixels.

    A box is kept when its area is positive and at least ``min_visible`` of it (and some
    of it) lies inside the window.

    Args:
        boxes: ``(n, 4)`` x1 y1 x2 y2 in image pixels.
        window: ``(x0, y0, x1, y1)``.
        min_visible: Smallest fraction of a box's area inside the window.

    Returns:
        ``kept`` (m,) indices into ``boxes`` and ``(m, 4)`` float64 boxes clipped to the
        window and shifted so that its top-left corner is (0, 0).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)  # (n, 4)
    x0, y0, x1, y1 = window
    lo = np.array([x0, y0, x0, y0], np.float64)
    clipped = boxes.clip(lo, np.array([x1, y1, x1, y1], np.float64))  # (n, 4)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])  # (n,)
    inside = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])  # (n,)
    keep = (area > 0) & (inside > 0) & (inside >= min_visible * area)
    return np.flatnonzero(keep), clipped[keep] - lo


@dataclass(frozen=True)
class Tiling:
    """How images are cut (see :func:`windows` and :func:`crop_boxes`)."""

    tile: int = 400
    overlap: float = 0.25
    min_visible: float = 0.5
    keep_empty: bool = False
    edge: str = "shift"


@dataclass
class TileCounts:
    """What tiling did, for the summary line.

    Attributes:
        images: Source images.
        boxes: Source boxes.
        tiles: Tiles written.
        empty: Tiles without boxes left out (``keep_empty=false``).
        instances: Boxes written (a box seen by two tiles counts twice).
        slivers: (box, tile) pairs dropped for less than ``min_visible`` inside.
        lost: Source boxes that went to no tile at all.
    """

    images: int = 0
    boxes: int = 0
    tiles: int = 0
    empty: int = 0
    instances: int = 0
    slivers: int = 0
    lost: int = 0

    def line(self) -> str:
        return (f"{self.images} images, {self.boxes} boxes -> {self.tiles} tiles, "
                f"{self.instances} boxes; left out {self.empty} empty tiles and "
                f"{self.slivers} slivers; {self.lost} boxes in no tile")


@contextlib.contextmanager
def no_pixel_limit() -> Iterator[None]:
    """Lift PIL's decompression-bomb limit: large scenes are the point here."""
    old, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = old


def tile_image(image: Image.Image, record: ImageRecord, prefix: str, out_dir: Path,
               tiling: Tiling, counts: TileCounts) -> list[ImageRecord]:
    """Cut one image into PNG tiles under ``out_dir`` and return their records.

    Args:
        image: The source image, RGB.
        record: Its boxes (x1 y1 x2 y2 pixels), category ids and crowd flags.
        prefix: Tile names are ``<prefix>_x<x0:04d>_y<y0:04d>.png`` (relative to ``out_dir``).
        out_dir: Folder of the tiles.
        tiling: How to cut.
        counts: Updated with what was written and left out.
    """
    records, seen = [], np.zeros(len(record.boxes), bool)
    boxes = np.asarray(record.boxes, np.float64).reshape(-1, 4)  # (n, 4)
    for window in windows(image.width, image.height, tiling.tile, tiling.overlap, tiling.edge):
        kept, tile_boxes = crop_boxes(boxes, window, tiling.min_visible)  # (m,), (m, 4)
        counts.slivers += len(crop_boxes(boxes, window, 0.0)[0]) - len(kept)
        if len(kept) == 0 and not tiling.keep_empty:
            counts.empty += 1
            continue
        seen[kept] = True
        x0, y0, x1, y1 = window
        name = f"{prefix}_x{x0:04d}_y{y0:04d}.png"
        (out_dir / name).parent.mkdir(parents=True, exist_ok=True)
        image.crop(window).save(out_dir / name)
        records.append(ImageRecord(name, x1 - x0, y1 - y0, tile_boxes,
                                   np.asarray(record.category_ids)[kept],
                                   np.asarray(record.crowd, bool)[kept], record.source))
        counts.tiles += 1
        counts.instances += len(kept)
    counts.images += 1
    counts.boxes += len(boxes)
    counts.lost += int((~seen).sum())
    return records


def tile_records(records: list[ImageRecord], image_root: Path, out_dir: Path, tiling: Tiling,
                 prefixes: list[str] | None = None, counts: TileCounts | None = None
                 ) -> list[ImageRecord]:
    """Tile every image of ``records`` (``file_name`` relative to ``image_root``).

    Args:
        prefixes: Tile name prefix of each record (default: ``file_name`` without suffix).
        counts: Receives the counts (a fresh one is used when None).

    Returns:
        The tiles' records, sorted by file name.

    Raises:
        ValueError: If two images would write the same tiles (same prefix).
    """
    prefixes = prefixes or [str(Path(r.file_name).with_suffix("")) for r in records]
    clash = {p for p in prefixes if prefixes.count(p) > 1}
    if clash:
        raise ValueError(f"images differing only in suffix would write the same tiles: {clash}")
    counts = counts if counts is not None else TileCounts()
    out = []
    for record, prefix in zip(records, prefixes):
        with no_pixel_limit(), Image.open(image_root / record.file_name) as im:
            image = Image.fromarray(rgb_array(im))  # (H, W, 3) uint8
        out += tile_image(image, record, prefix, out_dir, tiling, counts)
    return sorted(out, key=lambda r: r.file_name)


def records_from_coco(coco: dict, source: str) -> list[ImageRecord]:
    """A checked COCO dict (``retina.data.to_coco`` or ``load_coco``) as image records."""
    by_image: dict[int, list[dict]] = {im["id"]: [] for im in coco["images"]}
    for a in coco["annotations"]:
        by_image[a["image_id"]].append(a)
    records = []
    for im in coco["images"]:
        anns = by_image[im["id"]]
        xywh = np.array([a["bbox"] for a in anns], np.float64).reshape(-1, 4)  # (n, 4)
        records.append(ImageRecord(
            im["file_name"], int(im["width"]), int(im["height"]),
            np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1),  # (n, 4) xyxy
            np.array([a["category_id"] for a in anns], np.int64),
            np.array([bool(a.get("iscrowd", 0)) for a in anns], bool), source))
    return records


def read_source(cfg: TileOptions) -> tuple[dict, Path, str]:
    """The source annotations as a checked COCO dict, the image root and a description."""
    if cfg.format == "coco":
        if not cfg.ann or not cfg.images:
            raise ValueError("format=coco needs ann=FILE.json and images=DIR")
        from retina.data.coco import CocoDetection

        CocoDetection(cfg.ann, cfg.images)  # raises on bad entries, naming them
        return load_coco(cfg.ann).dataset, Path(cfg.images), cfg.ann
    if cfg.format in ("voc", "yolo"):
        if not cfg.root:
            raise ValueError(f"format={cfg.format} needs root=DIR")
        from retina.data.to_coco import convert

        coco, report = convert(cfg.format, cfg.root, cfg.split, skip_bad=cfg.skip_bad)
        report.log(log)
        return coco, Path(cfg.root), f"{cfg.format} {cfg.root} split {cfg.split}"
    raise ValueError(f"format={cfg.format!r}: expected coco, voc or yolo")


def tile_dataset(cfg: TileOptions) -> tuple[Path, TileCounts]:
    """Tile the source of ``cfg`` into ``cfg.out`` and check the written COCO file.

    Returns:
        The annotation file and the counts.
    """
    tiling = Tiling(cfg.tile, cfg.overlap, cfg.min_visible, cfg.keep_empty, cfg.edge)
    windows(1, 1, tiling.tile, tiling.overlap, tiling.edge)  # bad settings fail before reading
    if not 0 <= tiling.min_visible <= 1:
        raise ValueError(f"min_visible={tiling.min_visible}: expected a fraction in [0, 1]")
    coco, image_root, source = read_source(cfg)
    out = Path(cfg.out)
    counts = TileCounts()
    records = tile_records(records_from_coco(coco, source), image_root, out / "images", tiling,
                           counts=counts)
    report = Report(f"tiles of {source}")
    tiled = records_to_coco(records, coco["categories"], report)
    tiled["info"] = {"description": f"{cfg.tile}-px tiles of {source} (retina.data.tile)",
                     "retina": {"tiling": vars(tiling), "counts": vars(counts)}}
    if counts.lost:
        log.warning("%d boxes went to no tile: no tile holds min_visible=%s of them (larger "
                    "than a tile, or too little overlap); raise tile or overlap, or lower "
                    "min_visible", counts.lost, tiling.min_visible)
    ann = out / "annotations.json"
    ann.write_text(json.dumps(tiled, indent=1))
    from retina.data.coco import CocoDetection

    CocoDetection(ann, out / "images")  # the written file reads back as a dataset
    return ann, counts


def task(opts: TileOptions) -> None:
    ann, counts = tile_dataset(opts)
    print(f"wrote {ann}: {counts.line()}")


main = key_value_command("tile", task)


if __name__ == "__main__":
    sys.exit(main())
