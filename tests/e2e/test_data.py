"""Data end to end: the full NEON preparation, the converter's command line, training on VOC."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra.core.hydra_config import HydraConfig
from PIL import Image

from retina.data import CocoDetection, neon
from retina.data.tile import main as tile_main
from retina.data.to_coco import convert
from retina.data.to_coco import main as convert_main
from retina.training.config import compose_run
from retina.training.run import train
from tests.helpers import add_label_line

NEON_TILES = {
    "train.json": "40088a7d515d817abe2b5ad7a56104527627dde48d0b8abd5bf38dd8a7fbd4bb",
    "train pixels": "53b51268270b76f8be1edc841151983162ed08e94f2e38c2f3ca7d2daca44686",
    "val.json": "d4534a774115418b1efeb43849782c79252f9650cff9c1287a0e25a6d9a96f42",
    "val pixels": "b1b8f9ae80a8426f4b6653ca59cecd76ff6072a934d3df73b31de7eba9b8bc36",
}


def neon_fingerprint(root: Path) -> dict[str, str]:
    """sha256 of each annotation file and of each split's tiles (names and RGB pixels)."""
    out = {}
    for split in ("train", "val"):
        out[f"{split}.json"] = hashlib.sha256(
            (root / "annotations" / f"{split}.json").read_bytes()).hexdigest()
        pixels = hashlib.sha256()
        for path in sorted((root / split).glob("*.png")):
            with Image.open(path) as im:
                pixels.update(path.name.encode() + np.asarray(im.convert("RGB")).tobytes())
        out[f"{split} pixels"] = pixels.hexdigest()
    return out


@pytest.mark.slow
def test_prepare_neon(tmp_path: Path, monkeypatch):
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
    # Byte for byte the tiles the default model was trained on (before retina.data.tile
    # replaced neon.py's own tiler): the annotation files and the decoded tile pixels.
    assert neon_fingerprint(root) == NEON_TILES

    # Second call: no work (no split is written again, no file touched).
    mtime = (root / "annotations" / "train.json").stat().st_mtime_ns
    with monkeypatch.context() as patch:
        def no_work(*args, **kwargs):
            raise AssertionError("prepare_neon wrote a split of prepared data again")

        patch.setattr(neon, "_write_split", no_work)
        assert neon.prepare_neon(tmp_path / "neon") == root
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


def test_fast_dev_run_on_voc(voc_root: Path, tmp_path: Path, caplog):
    # photos: the photo recipe (retina train data=voc), shrunk: shorter side 128, ResNet-18
    cfg = compose_run(["debug=fdr", "data=voc", f"data.root={voc_root}", "data.train_split=null",
                       "data.val_split=null", f"data.cache_dir={tmp_path / 'cache'}",
                       "data.min_size=128", "data.max_size=192", "data.batch_size=2",
                       "model.detector.backbone.depth=18", "model.detector.backbone.weights=null",
                       "trainer.accelerator=cpu", "trainer.enable_progress_bar=false"],
                      tmp_path / "run")
    assert HydraConfig.get().runtime.choices["experiment"] == "photo"
    with caplog.at_level("INFO"):
        metrics = train(cfg)
    first = caplog.records[0].getMessage()  # the run's first line: the recipe, why, the other
    assert first.startswith("recipe: photo (experiment=photo), the default for data=voc")
    assert first.endswith("for aerial images or tiles: experiment=aerial")
    ceiling = [r.getMessage() for r in caplog.records if r.name == "retina.training.run"
               and r.getMessage().startswith("recall ceiling ")]  # the set-up check
    assert len(ceiling) == 1 and "(3 training images, input shorter side 128 px" in ceiling[0]
    assert {"val/mAP", "val/mAP_50", "val/AR_100"} <= set(metrics)
    assert len(list((tmp_path / "cache").glob("voc_all_*.json"))) == 1


def test_a_run_without_validation_data_says_so_in_metrics(tiny_cfg, yolo_root: Path, tmp_path):
    (yolo_root / "images" / "valid").mkdir(parents=True)
    metrics = train(tiny_cfg("debug=fdr", "data=yolo", "experiment=aerial",
                             f"data.root={yolo_root}",
                             "data.val_split=valid", f"data.cache_dir={tmp_path / 'cache'}"))
    assert "has no images" in metrics["no_validation"]
    assert not any(key.startswith("val/") for key in metrics)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == metrics


def test_fast_dev_run_on_tiles_of_voc(tiny_cfg, voc_root: Path, tmp_path: Path):
    out = tmp_path / "tiles"
    assert tile_main(["format=voc", f"root={voc_root}", f"out={out}", "tile=256",
                      "overlap=0.25"]) == 0
    ann, images = out / "annotations.json", out / "images"
    cfg = tiny_cfg("debug=fdr", "data=coco", "experiment=aerial",  # tiles: the tile recipe
                   f"data.train_ann={ann}", f"data.train_images={images}",
                   f"data.val_ann={ann}", f"data.val_images={images}")
    metrics = train(cfg)
    assert {"val/mAP", "val/mAP_50", "val/AR_100"} <= set(metrics)
