"""Data end to end: the full NEON preparation, the converter's command line, training on VOC."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from retina.data import CocoDetection, neon
from retina.data.convert import convert
from retina.data.convert import main as convert_main
from retina.training.run import train
from tests.helpers import add_label_line


@pytest.mark.slow
def test_prepare_neon(tmp_path: Path):
    assert importlib.util.find_spec("deepforest") is not None, "deepforest: run `make data`"
    root = neon.prepare_neon(tmp_path / "neon")
    stats = neon.summarize(root)
    # deepforest==2.1.0 is pinned (Makefile): the tiles are exactly these. Of the 574 train
    # and 377 val boxes, a box split by tile borders with less than half of it in any tile
    # is dropped (assign_boxes_to_tile).
    assert (stats["train"]["images"], stats["train"]["boxes"]) == (39, 568)
    assert (stats["val"]["images"], stats["val"]["boxes"]) == (14, 374)
    assert 5 <= stats["train"]["side_min"] and stats["train"]["side_max"] <= 110

    for split in ("train", "val"):
        ds = CocoDetection(root / "annotations" / f"{split}.json", root / split)
        assert ds.class_names == ["Tree"] and ds.cat_ids == [1]
        coco = json.loads(ds.ann_file.read_text())
        size = {im["id"]: (im["width"], im["height"]) for im in coco["images"]}
        assert set(size) == {a["image_id"] for a in coco["annotations"]}  # no empty tiles
        for im in coco["images"]:
            with Image.open(root / split / im["file_name"]) as f:
                assert f.size == (im["width"], im["height"])
                assert f.size[0] <= 400 and f.size[1] <= 400  # per side, not tuple order
        for a in coco["annotations"]:
            x, y, w, h = a["bbox"]
            width, height = size[a["image_id"]]
            assert w > 0 and h > 0 and x >= 0 and y >= 0
            assert x + w <= width and y + h <= height
    assert (root / "train" / "YELL_crop2_x0400_y0800.png").is_file()

    # Second call: no work.
    mtime = (root / "annotations" / "train.json").stat().st_mtime_ns
    start = time.perf_counter()
    neon.prepare_neon(tmp_path / "neon")
    assert time.perf_counter() - start < 0.5
    assert (root / "annotations" / "train.json").stat().st_mtime_ns == mtime

    # Stale marker: rebuilt in place, no temporary folders left behind.
    (root / "VERSION").write_text("old\n")
    neon.prepare_neon(tmp_path / "neon")
    assert neon.is_prepared(root) and sorted(p.name for p in tmp_path.iterdir()) == ["neon"]


def test_convert_command_line(yolo_root: Path, tmp_path: Path, capsys):
    out = tmp_path / "train.json"
    cmd = [sys.executable, "-m", "retina", "convert", "yolo", str(yolo_root), "split=train",
           f"out={out}"]  # fmt: skip
    run = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert f"wrote {out}: 3 images, 9 boxes, 3 classes" in run.stdout
    written = json.loads(out.read_text())
    expected, _ = convert("yolo", yolo_root, "train")
    assert {k: written[k] for k in ("images", "annotations", "categories")} == {
        k: expected[k] for k in ("images", "annotations", "categories")
    }
    add_label_line("2 0.5 0.5 0.1")(yolo_root)  # bad input: a one-line error, no traceback
    assert convert_main(cmd[4:]) == 2
    assert "labels/train/2011_000006.txt:2: 4 fields, expected 5" in capsys.readouterr().err


def test_fast_dev_run_on_voc(tiny_cfg, voc_root: Path, tmp_path: Path):
    cfg = tiny_cfg("debug=fdr", "data=voc", f"data.root={voc_root}", "data.train_split=null",
                   "data.val_split=null", f"data.cache_dir={tmp_path / 'cache'}")  # fmt: skip
    metrics = train(cfg)
    assert {"val/mAP", "val/mAP_50", "val/AR_100"} <= set(metrics)
    assert len(list((tmp_path / "cache").glob("voc_all_*.json"))) == 1
