"""Prepare the NEON tree-crown dataset (shipped in the ``deepforest`` wheel) as COCO tiles.

The source scenes are aerial RGB images (10 cm per pixel) with Pascal VOC XML boxes.
They are cut into ``tile`` x ``tile`` tiles and written as a one-class ("Tree") COCO
dataset::

    root/
      VERSION                    marker: preparation version + tile size
      train/YELL_crop2_x0000_y0000.png ...
      val/YELL_crop_x0000_y0000.png ... OSBS_029_x0000_y0000.png SOAP_061_x0000_y0000.png
      annotations/train.json annotations/val.json

Run ``python -m retina.data.neon --root data/neon_trees``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from retina.data.validate import ImageRecord, Report, records_to_coco
from retina.data.voc import read_boxes

log = logging.getLogger(__name__)

DEEPFOREST_VERSION = "2.1.0"
# Bump when the output layout or the tiling rule changes: prepared folders are rebuilt.
FORMAT_VERSION = 1
CATEGORY = {"id": 1, "name": "Tree"}


@dataclass(frozen=True)
class Scene:
    """One annotated source image of the deepforest data folder.

    Attributes:
        stem: File stem of the ``.png`` image and its ``.xml`` VOC annotation.
        short: Short name used as the prefix of the tile file names.
        num_boxes: Number of boxes expected in the XML (guards against a changed wheel).
    """

    stem: str
    short: str
    num_boxes: int


SPLITS: dict[str, tuple[Scene, ...]] = {
    "train": (Scene("2019_YELL_2_528000_4978000_image_crop2", "YELL_crop2", 574),),
    "val": (
        Scene("2019_YELL_2_541000_4977000_image_crop", "YELL_crop", 279),
        Scene("OSBS_029", "OSBS_029", 61),
        Scene("SOAP_061", "SOAP_061", 37),
    ),
}


def deepforest_data_dir() -> Path:
    """Locate the data folder of the installed ``deepforest`` wheel without importing it.

    Returns:
        Path of ``<site-packages>/deepforest/data``.

    Raises:
        RuntimeError: If ``deepforest`` is not installed.
    """
    spec = importlib.util.find_spec("deepforest")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "The NEON tree-crown data comes from the deepforest wheel, which is not installed. "
            f"Install it with: pip install --no-deps deepforest=={DEEPFOREST_VERSION}  "
            "(or run `make data`)."
        )
    return Path(spec.submodule_search_locations[0]) / "data"


def assign_boxes_to_tile(
    boxes: np.ndarray, x0: float, y0: float, x1: float, y1: float
) -> np.ndarray:
    """Keep the boxes with at least half of their area inside a tile, in tile coordinates.

    Args:
        boxes: ``(n, 4)`` xyxy boxes in image coordinates.
        x0: Left edge of the tile (image coordinates).
        y0: Top edge of the tile.
        x1: Right edge of the tile (exclusive).
        y1: Bottom edge of the tile (exclusive).

    Returns:
        ``(m, 4)`` float64 xyxy boxes (m <= n) clipped to the tile and translated so that
        the tile's top-left corner is (0, 0). Boxes of zero area are never kept.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)  # (n, 4)
    clipped = np.stack(
        [
            boxes[:, 0].clip(x0, x1),
            boxes[:, 1].clip(y0, y1),
            boxes[:, 2].clip(x0, x1),
            boxes[:, 3].clip(y0, y1),
        ],
        axis=1,
    )  # (n, 4)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])  # (n,)
    inside = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])  # (n,)
    keep = (area > 0) & (inside >= 0.5 * area)
    return clipped[keep] - np.array([x0, y0, x0, y0], dtype=np.float64)  # (m, 4)


def tile_origins(width: int, height: int, tile: int) -> list[tuple[int, int, int, int]]:
    """Grid of tiles with step ``tile`` from (0, 0); edge tiles are cut at the border.

    Args:
        width: Image width in pixels.
        height: Image height in pixels.
        tile: Tile side in pixels.

    Returns:
        ``(x0, y0, x1, y1)`` of each tile, row by row.
    """
    return [
        (x0, y0, min(x0 + tile, width), min(y0 + tile, height))
        for y0 in range(0, height, tile)
        for x0 in range(0, width, tile)
    ]


def _tile_scene(scene: Scene, src: Path, out: Path, tile: int) -> list[ImageRecord]:
    """Cut one scene into tiles, save those with boxes as PNG under ``out``.

    Args:
        scene: The source scene.
        src: The deepforest data folder (``<stem>.png`` and ``<stem>.xml``).
        out: Folder of the split's tiles.
        tile: Tile side in pixels.

    Returns:
        One `ImageRecord` per saved tile, boxes ``(m, 4)`` xyxy in tile pixels, class "Tree".

    Raises:
        RuntimeError: If the XML does not hold ``scene.num_boxes`` boxes.
    """
    xml_file = src / f"{scene.stem}.xml"
    boxes = read_boxes(xml_file)  # (n, 4)
    if len(boxes) != scene.num_boxes:
        raise RuntimeError(
            f"{xml_file} has {len(boxes)} boxes, expected {scene.num_boxes}: "
            f"is deepforest=={DEEPFOREST_VERSION} installed?"
        )
    with Image.open(src / f"{scene.stem}.png") as im:
        image = im.convert("RGB")
    records = []
    for x0, y0, x1, y1 in tile_origins(image.width, image.height, tile):
        tile_boxes = assign_boxes_to_tile(boxes, x0, y0, x1, y1)  # (m, 4)
        if len(tile_boxes) == 0:
            continue
        name = f"{scene.short}_x{x0:04d}_y{y0:04d}.png"
        image.crop((x0, y0, x1, y1)).save(out / name)
        m = len(tile_boxes)
        cats = np.full(m, CATEGORY["id"], np.int64)  # (m,)
        records.append(
            ImageRecord(name, x1 - x0, y1 - y0, tile_boxes, cats, np.zeros(m, bool), xml_file.name)
        )
    return records


def _write_split(scenes: tuple[Scene, ...], src: Path, out: Path, split: str, tile: int) -> dict:
    """Tile the scenes of one split, save the PNG tiles under ``out/split`` and return COCO."""
    (out / split).mkdir(parents=True)
    records = [r for scene in scenes for r in _tile_scene(scene, src, out / split, tile)]
    # Stable ids: images sorted by file name, annotations in image order then XML order.
    records.sort(key=lambda r: r.file_name)
    report = Report(f"neon {split}")
    coco = records_to_coco(records, [dict(CATEGORY)], report)
    report.log(log)
    return coco


def _version_marker(tile: int) -> str:
    try:
        source = importlib.metadata.version("deepforest")
    except importlib.metadata.PackageNotFoundError:
        source = "unknown"
    return f"neon-trees format={FORMAT_VERSION} tile={tile} deepforest={source}\n"


def is_prepared(root: str | Path, tile: int = 400) -> bool:
    """Whether ``root`` holds a complete dataset prepared with the same settings."""
    root = Path(root)
    marker = root / "VERSION"
    return (
        (root / "annotations" / "train.json").is_file()
        and (root / "annotations" / "val.json").is_file()
        and marker.is_file()
        and marker.read_text() == _version_marker(tile)
    )


def prepare_neon(root: str | Path = "data/neon_trees", tile: int = 400) -> Path:
    """Write the NEON tree-crown tiles and COCO annotations under ``root``.

    Train: tiles of the YELL ``crop2`` scene. Val: tiles of the YELL ``crop`` scene plus
    OSBS_029 and SOAP_061 (400x400, single tiles at the default size). A box goes to a
    tile when at least half of its area lies inside it (see `assign_boxes_to_tile`);
    tiles without boxes are dropped. All labels become the single class "Tree" (id 1).

    Deterministic and idempotent: returns at once if ``root`` already holds a dataset
    with a matching ``VERSION`` marker. The dataset is built in a temporary folder next
    to ``root`` and renamed into place, so an interrupted run leaves no half dataset.

    Args:
        root: Output folder.
        tile: Tile side in pixels.

    Returns:
        ``root`` as a Path.

    Raises:
        RuntimeError: If deepforest is missing or its data differs from the expected one.
    """
    root = Path(root)
    if is_prepared(root, tile):
        log.info("NEON tree crowns already prepared in %s", root)
        return root
    src = deepforest_data_dir()
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        (tmp / "annotations").mkdir()
        for split, scenes in SPLITS.items():
            coco = _write_split(scenes, src, tmp, split, tile)
            (tmp / "annotations" / f"{split}.json").write_text(json.dumps(coco, indent=1))
        (tmp / "VERSION").write_text(_version_marker(tile))
        old = None
        if root.exists():  # stale or other settings: move aside, swap in, then delete
            old = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
            os.replace(root, old / root.name)
        os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    log.info("NEON tree crowns written to %s", root)
    return root


def summarize(root: str | Path) -> dict[str, dict[str, float]]:
    """Count images and boxes of each prepared split, with box side statistics in pixels.

    Args:
        root: Folder written by `prepare_neon`.

    Returns:
        ``{split: {"images", "boxes", "side_min", "side_median", "side_max"}}`` where the
        side of a box is ``max(w, h)``.
    """
    out = {}
    for split in SPLITS:
        coco = json.loads((Path(root) / "annotations" / f"{split}.json").read_text())
        wh = np.array([a["bbox"][2:] for a in coco["annotations"]]).reshape(-1, 2)  # (n, 2)
        side = wh.max(axis=1) if len(wh) else np.zeros(1)  # (n,)
        out[split] = {
            "images": len(coco["images"]),
            "boxes": len(coco["annotations"]),
            "side_min": float(side.min()),
            "side_median": float(np.median(side)),
            "side_max": float(side.max()),
        }
    return out


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m retina.data.neon [--root DIR] [--tile N]``."""
    parser = argparse.ArgumentParser(description="Prepare the NEON tree-crown dataset (COCO).")
    parser.add_argument("--root", default="data/neon_trees", help="output folder")
    parser.add_argument("--tile", type=int, default=400, help="tile side in pixels")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    root = prepare_neon(args.root, args.tile)
    for split, s in summarize(root).items():
        print(
            f"{root / 'annotations' / f'{split}.json'}: {s['images']} images in "
            f"{root / split}, {s['boxes']} boxes, box side (max of w, h) "
            f"min/median/max {s['side_min']:.0f}/{s['side_median']:.0f}/{s['side_max']:.0f} px"
        )


if __name__ == "__main__":
    main()
