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

from retina.data.tile import Tiling, tile_records
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


# The NEON tiles: the plain grid of step ``tile`` from (0, 0), edge tiles cut at the border,
# a box in every tile that holds at least half of it, tiles without boxes left out. The
# default model's numbers depend on these exact tiles (tests/e2e/test_data.py keeps them).
def neon_tiling(tile: int) -> Tiling:
    return Tiling(tile=tile, overlap=0.0, min_visible=0.5, keep_empty=False, edge="cut")


def scene_record(scene: Scene, src: Path) -> ImageRecord:
    """The scene's image and its VOC boxes, all of class "Tree" (labels and difficult are
    not used).

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
    n = len(boxes)
    with Image.open(src / f"{scene.stem}.png") as im:
        width, height = im.size
    return ImageRecord(f"{scene.stem}.png", width, height, boxes,
                       np.full(n, CATEGORY["id"], np.int64), np.zeros(n, bool), xml_file.name)


def _write_split(scenes: tuple[Scene, ...], src: Path, out: Path, split: str, tile: int) -> dict:
    """Tile the scenes of one split, save the PNG tiles under ``out/split`` and return COCO.

    Tiles are named ``<scene.short>_x<x0:04d>_y<y0:04d>.png``; image ids follow the sorted
    file names, annotation ids image order then XML order.
    """
    (out / split).mkdir(parents=True)
    records = tile_records([scene_record(s, src) for s in scenes], src, out / split,
                           neon_tiling(tile), prefixes=[s.short for s in scenes])
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
    OSBS_029 and SOAP_061 (400x400, single tiles at the default size), cut by
    ``retina.data.tile`` (`neon_tiling`): a box goes to a tile when at least half of its
    area lies inside it; tiles without boxes are dropped. All labels become the single
    class "Tree" (id 1).

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
