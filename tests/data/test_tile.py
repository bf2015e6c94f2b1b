"""retina.data.tile: the window grid, boxes cut by tiles, and the tiling command on real VOC
and YOLO fixtures (training on its output is in e2e/test_data.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retina.data import CocoDetection
from retina.data.tile import TileCounts, Tiling, crop_boxes, main, tile_records, windows
from retina.data.to_coco import convert
from retina.data.validate import ImageRecord


def test_windows_cut_is_the_plain_grid():
    # step = tile from (0, 0), the last column and row cut at the border (the NEON tiles)
    assert windows(900, 500, 400, edge="cut") == [
        (0, 0, 400, 400), (400, 0, 800, 400), (800, 0, 900, 400),
        (0, 400, 400, 500), (400, 400, 800, 500), (800, 400, 900, 500),
    ]  # fmt: skip


def test_windows_shift_keeps_every_window_whole():
    # step round(400 * 0.75) = 300: x 0, 300, 600 (600 + 400 = 1000 ends at the border);
    # y 0, then 300 shifted in to 500 - 400 = 100
    assert windows(1000, 500, 400, overlap=0.25) == [
        (0, 0, 400, 400), (300, 0, 700, 400), (600, 0, 1000, 400),
        (0, 100, 400, 500), (300, 100, 700, 500), (600, 100, 1000, 500),
    ]  # fmt: skip
    # cut: y 0, 300 (300 + 400 >= 500: the last), its window cut to 500
    assert windows(1000, 500, 400, 0.25, "cut")[3:] == [
        (0, 300, 400, 500), (300, 300, 700, 500), (600, 300, 1000, 500)]
    assert windows(300, 200, 400) == [(0, 0, 300, 200)]  # smaller than a tile: one window
    assert windows(400, 400, 400, 0.5) == [(0, 0, 400, 400)]


@pytest.mark.parametrize("args, message", [
    ((10, 10, 0), "tile=0"), ((10, 10, 4, 1.0), "overlap=1.0"), ((10, 10, 4, 0, "pad"), "edge='pad'"),
])
def test_bad_window_settings_are_named(args, message):
    with pytest.raises(ValueError, match=message):
        windows(*args)


def test_crop_boxes_visible_fraction():
    boxes = np.array([
        [390, 10, 410, 30],  # area 20*20 = 400, inside 10*20 = 200 = half: kept
        [380, 10, 410, 30],  # area 30*20 = 600, inside 200 < 300: a sliver at 0.5
        [500, 100, 540, 150],  # fully inside
        [790, 390, 820, 420],  # area 900, inside 10*10 = 100: a sliver at 0.5
        [600, 50, 600, 60],  # zero area: never kept
        [900, 0, 950, 10],  # outside: never kept, not even at min_visible 0
    ], dtype=float)
    kept, out = crop_boxes(boxes, (400, 0, 800, 400))
    # clipped to x >= 400 then shifted by (-400, 0)
    assert kept.tolist() == [0, 2]
    np.testing.assert_array_equal(out, [[0, 10, 10, 30], [100, 100, 140, 150]])
    kept, out = crop_boxes(boxes, (400, 0, 800, 400), min_visible=0.1)
    assert kept.tolist() == [0, 1, 2, 3]
    np.testing.assert_array_equal(out[3], [390, 390, 400, 400])
    assert crop_boxes(boxes, (400, 0, 800, 400), min_visible=0.0)[0].tolist() == [0, 1, 2, 3]
    assert crop_boxes(np.zeros((0, 4)), (0, 0, 10, 10))[1].shape == (0, 4)


def test_tile_records_counts_and_names(tmp_path: Path):
    Image.new("RGB", (30, 20), (10, 20, 30)).save(tmp_path / "scene.png")
    boxes = np.array([[1, 1, 5, 5], [8, 3, 11, 7], [9, 12, 12, 18], [25, 15, 29, 19]], float)
    record = ImageRecord("scene.png", 30, 20, boxes, np.array([1, 2, 1, 1]),
                         np.array([False, False, True, False]), "scene.xml")
    counts = TileCounts()
    # 10-px tiles, step 5: x 0 5 10 15 20, y 0 5 10; box (8, 3, 11, 7) is whole in x=5
    out = tile_records([record], tmp_path, tmp_path / "tiles", Tiling(10, 0.5, 0.5), counts=counts)
    names = [r.file_name for r in out]
    assert names == sorted(names) and "scene_x0005_y0000.png" in names
    by_name = {r.file_name: r for r in out}
    np.testing.assert_array_equal(by_name["scene_x0005_y0000.png"].boxes, [[3, 3, 6, 7]])
    assert by_name["scene_x0005_y0010.png"].crowd.tolist() == [True]  # flags go along
    assert by_name["scene_x0005_y0000.png"].category_ids.tolist() == [2]
    assert all(Image.open(tmp_path / "tiles" / n).size == (10, 10) for n in names)
    assert (counts.images, counts.boxes, counts.tiles) == (1, 4, len(out))
    assert counts.tiles + counts.empty == 15 and counts.lost == 0
    assert counts.instances == sum(len(r.boxes) for r in out)
    with pytest.raises(ValueError, match="same tiles"):
        tile_records([record, record], tmp_path, tmp_path / "t2", Tiling(10))


@pytest.mark.parametrize("fmt", ["voc", "yolo"])
def test_tile_command_writes_checked_coco(fmt, voc_root: Path, yolo_root: Path, tmp_path: Path,
                                          capsys):
    root, split = (voc_root, None) if fmt == "voc" else (yolo_root, "train")
    out = tmp_path / "tiles"
    args = [f"format={fmt}", f"root={root}", f"out={out}", "tile=200", "overlap=0.25",
            "min_visible=0.3"] + ([f"split={split}"] if split else [])
    assert main(args) == 0
    coco = json.loads((out / "annotations.json").read_text())
    source, _ = convert(fmt, root, split)
    assert coco["categories"] == source["categories"]
    # 500 x 338 and 500 x 375 photos, 200-px tiles, step 150: x 0 150 300; y 0 138 or
    # 0 150 175: 6 + 9 + 9 windows
    assert [len(windows(im["width"], im["height"], 200, 0.25)) for im in source["images"]] \
        == [6, 9, 9]
    assert len(coco["images"]) + coco["info"]["retina"]["counts"]["empty"] == 24
    assert f"wrote {out / 'annotations.json'}: 3 images, 9 boxes -> " in capsys.readouterr().out
    ds = CocoDetection(out / "annotations.json", out / "images")
    assert len(ds) == len(coco["images"]) and ds.report.dropped == ds.report.clipped == 0
    for im in coco["images"]:
        assert (im["width"], im["height"]) == (200, 200)
        assert Image.open(out / "images" / im["file_name"]).size == (200, 200)
    # each tile box is a source box clipped to the tile, at least 30 % of it inside
    src = {Path(im["file_name"]).stem: im["id"] for im in source["images"]}
    src_boxes = {}
    for a in source["annotations"]:
        src_boxes.setdefault(a["image_id"], []).append(a)
    tiles = {im["id"]: im["file_name"] for im in coco["images"]}
    for a in coco["annotations"]:
        stem, x0, y0 = Path(tiles[a["image_id"]]).stem.rsplit("_", 2)
        dx, dy = int(x0[1:]), int(y0[1:])
        x, y, w, h = a["bbox"]
        found = [s for s in src_boxes[src[stem]] if s["category_id"] == a["category_id"]
                 and np.allclose(np.clip([s["bbox"][0] - dx, s["bbox"][1] - dy,
                                          s["bbox"][0] + s["bbox"][2] - dx,
                                          s["bbox"][1] + s["bbox"][3] - dy], 0, 200),
                                 [x, y, x + w, y + h])]
        assert found and w * h >= 0.3 * found[0]["bbox"][2] * found[0]["bbox"][3] - 1e-9


def test_tile_command_errors_name_the_key(tmp_path: Path, capsys):
    def error_of(argv: list[str]) -> str:
        with pytest.raises(SystemExit) as exit_info:  # an option: before anything runs
            main(argv)
        assert exit_info.value.code == 2
        return capsys.readouterr().err

    assert "missing format=..." in error_of([f"out={tmp_path}"])
    assert main(["format=coco", f"out={tmp_path}"]) == 2  # needs the files: one line too
    assert "format=coco needs ann=FILE.json and images=DIR" in capsys.readouterr().err
    err = error_of(["format=voc", f"root={tmp_path}", f"out={tmp_path}", "overlap=1.5"])
    assert "overlap=1.5: must be between 0 and 0.9" in err
    assert "unknown option 'tiles' (did you mean tile?)" in error_of(
        ["format=voc", f"root={tmp_path}", f"out={tmp_path}", "tiles=3"])
