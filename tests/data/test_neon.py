"""retina.data.neon: tiling the NEON scenes into COCO files (the tiler is tested in
test_tile.py; the full preparation, byte for byte, in e2e/test_data.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from PIL import Image

from retina.data import neon


def test_missing_deepforest_message(monkeypatch: pytest.MonkeyPatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "deepforest" else real(n, *a)
    )
    with pytest.raises(RuntimeError, match=r"pip install --no-deps deepforest==2\.1\.0"):
        neon.deepforest_data_dir()


def _voc_xml(boxes: list[tuple[str, int, tuple[int, int, int, int]]]) -> str:
    """VOC XML text for ``(name, difficult, (xmin, ymin, xmax, ymax))`` objects."""
    objects = "".join(
        f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin>"
        f"<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for n, d, b in boxes
    )
    return f"<annotation><size><width>30</width><height>20</height></size>{objects}</annotation>"


def test_neon_split_tiles_and_coco(tmp_path: Path):
    # A flat deepforest-like folder: any label (and difficult) becomes "Tree", not crowd.
    src = tmp_path / "src"
    src.mkdir()
    Image.new("RGB", (30, 20), (10, 20, 30)).save(src / "scene.png")
    objects = [("Dead", 0, (12, 2, 16, 8)), ("Alive", 1, (1, 1, 5, 5)), ("Tree", 0, (8, 3, 11, 7))]
    (src / "scene.xml").write_text(_voc_xml(objects))
    scenes = (neon.Scene("scene", "S", 3),)
    coco = neon._write_split(scenes, src, tmp_path / "out", "val", tile=10)
    # Tiles sorted by name; (12, 2, 16, 8) is in the x=10 tile; the y=10 and x=20 tiles are empty.
    assert [(im["id"], im["file_name"], im["width"], im["height"]) for im in coco["images"]] == [
        (1, "S_x0000_y0000.png", 10, 10), (2, "S_x0010_y0000.png", 10, 10),
    ]  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "out" / "val").iterdir()) == [
        "S_x0000_y0000.png", "S_x0010_y0000.png",
    ]  # fmt: skip
    ann = [(a["id"], a["image_id"], a["category_id"], a["bbox"], a["area"], a["iscrowd"])
           for a in coco["annotations"]]  # fmt: skip
    # (8, 3, 11, 7): 2/3 of it in the x=0 tile -> clipped to (8, 3, 10, 7).
    assert ann == [
        (1, 1, 1, [1.0, 1.0, 4.0, 4.0], 16.0, 0), (2, 1, 1, [8.0, 3.0, 2.0, 4.0], 8.0, 0),
        (3, 2, 1, [2.0, 2.0, 4.0, 6.0], 24.0, 0),
    ]  # fmt: skip
    assert coco["categories"] == [{"id": 1, "name": "Tree"}]
    with pytest.raises(RuntimeError, match=r"scene\.xml has 3 boxes, expected 4"):
        neon._write_split((neon.Scene("scene", "S", 4),), src, tmp_path / "bad", "val", tile=10)
