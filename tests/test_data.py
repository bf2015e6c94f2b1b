"""Tests of retina.data: COCO dataset, transforms, collate, datamodule, NEON preparation."""

from __future__ import annotations

import importlib.util
import json
import logging
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from retina.data import (
    CocoDetection,
    DetectionDataModule,
    collate,
    eval_transforms,
    neon,
    read_rgb,
    train_transforms,
)
from retina.data.neon import assign_boxes_to_tile, tile_origins

# ---------------------------------------------------------------- synthetic COCO fixture


def _coco(images: list[dict], annotations: list[dict]) -> dict:
    # Category ids deliberately unsorted and non-contiguous: 3 -> label 0, 7 -> label 1.
    categories = [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}]
    return {"images": images, "annotations": annotations, "categories": categories}


@pytest.fixture
def coco_dir(tmp_path: Path) -> Path:
    """Three small images: RGB with boxes, grayscale with a degenerate box, RGBA empty."""
    rng = np.random.default_rng(0)
    img = tmp_path / "images"
    img.mkdir()
    Image.fromarray(rng.integers(0, 255, (20, 30, 3), np.uint8)).save(img / "a.png")  # H20 W30
    Image.fromarray(rng.integers(0, 255, (16, 16), np.uint8), "L").save(img / "b.png")
    Image.fromarray(rng.integers(0, 255, (10, 12, 4), np.uint8), "RGBA").save(img / "c.png")
    images = [  # ids not in file order: the dataset sorts by id (5, 7, 10)
        {"id": 10, "file_name": "a.png", "height": 20, "width": 30},
        {"id": 5, "file_name": "b.png", "height": 16, "width": 16},
        {"id": 7, "file_name": "c.png", "height": 10, "width": 12},
    ]
    anns = [
        {"id": 1, "image_id": 10, "category_id": 7, "bbox": [2, 3, 10, 5], "iscrowd": 0},
        {"id": 2, "image_id": 10, "category_id": 3, "bbox": [25, 10, 10, 5], "iscrowd": 0},
        {"id": 3, "image_id": 10, "category_id": 3, "bbox": [0, 0, 5, 5], "iscrowd": 1},
        {"id": 4, "image_id": 5, "category_id": 7, "bbox": [0, 0, 0, 4], "iscrowd": 0},
        {"id": 5, "image_id": 5, "category_id": 3, "bbox": [1, 1, 4, 4], "iscrowd": 0},
    ]
    (tmp_path / "ann.json").write_text(json.dumps(_coco(images, anns)))
    return tmp_path


def test_dataset_labels_boxes_and_conversion(coco_dir: Path, caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.WARNING, logger="retina.data.coco"):
        ds = CocoDetection(coco_dir / "ann.json", coco_dir / "images")
    assert ds.cat_ids == [3, 7] and ds.class_names == ["cat", "dog"] and ds.num_classes == 2
    assert ds.image_ids == [5, 7, 10] and len(ds) == 3
    # One line: ann 4 (w=0) dropped, ann 2 (x 25..35 in a 30-wide image) clipped.
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1
    assert "dropped 1 degenerate boxes, clipped 1 (first: b.png, a.png)" in messages[0]

    image, target = ds[2]  # a.png, RGB
    assert isinstance(image, tv_tensors.Image) and image.dtype == torch.uint8
    assert image.shape == (3, 20, 30)
    assert isinstance(target["boxes"], tv_tensors.BoundingBoxes)
    assert target["boxes"].canvas_size == (20, 30) and target["boxes"].dtype == torch.float32
    # xywh -> xyxy; the crowd box is excluded; [25, 10, 10, 5] -> [25, 10, 35->30, 15].
    torch.testing.assert_close(
        target["boxes"].as_subclass(torch.Tensor),
        torch.tensor([[2.0, 3.0, 12.0, 8.0], [25.0, 10.0, 30.0, 15.0]]),
    )
    assert target["labels"].tolist() == [1, 0] and target["labels"].dtype == torch.int64
    assert target["image_id"] == 10 and target["orig_size"] == (20, 30)

    gray, target = ds[0]  # b.png, grayscale -> 3 equal channels
    assert gray.shape == (3, 16, 16) and gray.dtype == torch.uint8
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[0], gray[2])
    assert target["labels"].tolist() == [0]  # degenerate box dropped
    torch.testing.assert_close(
        target["boxes"].as_subclass(torch.Tensor), torch.tensor([[1.0, 1.0, 5.0, 5.0]])
    )

    rgba, target = ds[1]  # c.png, RGBA and no boxes: kept, empty target
    assert rgba.shape == (3, 10, 12) and rgba.dtype == torch.uint8
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)


def test_read_rgb_16bit_gray(tmp_path: Path):
    gray16 = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)  # 257 * v -> v in 8 bits
    Image.fromarray(gray16).save(tmp_path / "g16.png")
    image = read_rgb(tmp_path / "g16.png")
    assert image.dtype == torch.uint8 and image.tolist() == [[[0, 100, 255]]] * 3


def test_malformed_json_names_file(tmp_path: Path):
    bad = tmp_path / "broken.json"
    bad.write_text('{"images": [],\n "categories": [}')
    with pytest.raises(ValueError, match=r"broken\.json.*line 2"):
        CocoDetection(bad, tmp_path)
    with pytest.raises(FileNotFoundError, match="nothere.json"):
        CocoDetection(tmp_path / "nothere.json", tmp_path)


def test_unknown_category_names_annotation(coco_dir: Path):
    data = json.loads((coco_dir / "ann.json").read_text())
    data["annotations"].append(
        {"id": 99, "image_id": 5, "category_id": 42, "bbox": [1, 1, 2, 2], "iscrowd": 0}
    )
    (coco_dir / "bad.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"bad\.json: annotation id 99 has category_id 42"):
        CocoDetection(coco_dir / "bad.json", coco_dir / "images")


def test_missing_image_names_path(coco_dir: Path):
    ds = CocoDetection(coco_dir / "ann.json", coco_dir / "images")
    (coco_dir / "images" / "c.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"images/c\.png \(image id 7\)"):
        ds[1]
    with pytest.raises(FileNotFoundError, match=r"1 of 3 images .* first: .*images/c\.png"):
        CocoDetection(coco_dir / "ann.json", coco_dir / "images")


# ---------------------------------------------------------------- collate


def _sample(h: int, w: int, boxes: list[list[float]], labels: list[int], image_id: int):
    target = {
        "boxes": tv_tensors.BoundingBoxes(
            torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            format="XYXY",
            canvas_size=(h, w),
        ),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "image_id": image_id,
        "orig_size": (2 * h, 2 * w),
    }
    return tv_tensors.Image(torch.rand(3, h, w)), target


def test_collate_pads_images_and_targets():
    a = _sample(100, 150, [[1, 2, 3, 4], [5, 6, 7, 8]], [2, 0], image_id=11)
    b = _sample(130, 60, [], [], image_id=12)  # no boxes
    out = collate([a, b], size_divisible=128)
    # max H = 130 -> 256, max W = 150 -> 256
    assert out["images"].shape == (2, 3, 256, 256) and out["images"].dtype == torch.float32
    assert type(out["images"]) is torch.Tensor
    assert torch.equal(out["images"][0, :, :100, :150], a[0].as_subclass(torch.Tensor))
    assert out["images"][0, :, 100:].abs().sum() == 0 and out["images"][1, :, :, 60:].sum() == 0
    assert out["boxes"].shape == (2, 2, 4) and out["boxes"].dtype == torch.float32
    assert out["boxes"][0].tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert out["boxes"][1].abs().sum() == 0
    assert out["labels"].tolist() == [[2, 0], [-1, -1]]
    assert out["image_ids"].tolist() == [11, 12]
    assert out["image_sizes"].tolist() == [[100, 150], [130, 60]]
    assert out["orig_sizes"].tolist() == [[200, 300], [260, 120]]
    assert out["orig_sizes"].dtype == torch.int64 and out["image_sizes"].dtype == torch.int64

    empty = collate([b, b], size_divisible=32)  # 130 -> 160, 60 -> 64; no boxes at all
    assert empty["images"].shape == (2, 3, 160, 64)
    assert empty["boxes"].shape == (2, 0, 4) and empty["labels"].shape == (2, 0)


# ---------------------------------------------------------------- transforms


def _box_sample(boxes: list[list[float]], h: int = 50, w: int = 200):
    image = tv_tensors.Image(torch.randint(0, 256, (3, h, w), dtype=torch.uint8))
    target = {
        "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(h, w)),
        "labels": torch.arange(len(boxes)),
        "image_id": 3,
        "orig_size": (h, w),
    }
    return image, target


def _boxes(target: dict) -> list[list[float]]:
    return target["boxes"].as_subclass(torch.Tensor).tolist()


def test_fixed_size_resize_scales_boxes():
    # 200x50 (WxH) -> 100x100: x * 100/200 = x/2, y * 100/50 = 2y.
    # [20, 10, 60, 30] -> [10, 20, 30, 60]; [0, 0, 1, 0.4] -> [0, 0, 0.5, 0.8] (< 1 px: removed)
    image, target = eval_transforms(size=100)(*_box_sample([[20, 10, 60, 30], [0, 0, 1, 0.4]]))
    assert image.shape == (3, 100, 100) and image.dtype == torch.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert _boxes(target) == [[10.0, 20.0, 30.0, 60.0]] and target["labels"].tolist() == [0]
    assert target["image_id"] == 3 and target["orig_size"] == (50, 200)


def test_min_max_size_resize():
    # short side 50 -> 100 would make the long side 400 > 300: capped, factor 300/200 = 1.5.
    image, target = eval_transforms(min_size=100, max_size=300)(*_box_sample([[20, 10, 60, 30]]))
    assert image.shape == (3, 75, 300)
    assert _boxes(target) == [[30.0, 15.0, 90.0, 45.0]]
    image, _ = eval_transforms()(*_box_sample([[20, 10, 60, 30]]))
    assert image.shape == (3, 50, 200)


def test_flips_move_boxes():
    sample = _box_sample([[20, 10, 60, 30]])  # W = 200, H = 50
    _, t = train_transforms(hflip=1.0)(*sample)
    assert _boxes(t) == [[140.0, 10.0, 180.0, 30.0]]  # x -> 200 - x
    _, t = train_transforms(hflip=0.0, vflip=1.0)(*sample)
    assert _boxes(t) == [[20.0, 20.0, 60.0, 40.0]]  # y -> 50 - y
    image, t = train_transforms(hflip=1.0, vflip=1.0, photometric=True)(*sample)
    assert _boxes(t) == [[140.0, 20.0, 180.0, 40.0]] and image.dtype == torch.float32
    assert t["image_id"] == 3 and t["orig_size"] == (50, 200)


def test_quarter_turn_moves_boxes_and_swaps_sides():
    image, target = _box_sample([[20, 10, 60, 30]])  # W = 200, H = 50
    turned, t = train_transforms(hflip=0.0, rot90=1.0)(image, target)
    assert turned.shape == (3, 200, 50)  # counter-clockwise: (x, y) -> (y, W - x)
    assert _boxes(t) == [[10.0, 140.0, 30.0, 180.0]]
    torch.testing.assert_close(turned, torch.rot90(image, 1, dims=(1, 2)).float() / 255)


def test_scale_jitter_range():
    tf = train_transforms(size=100, scale_jitter=(0.5, 1.5))
    for _ in range(5):
        image, _ = tf(*_box_sample([[20, 10, 60, 30]]))
        assert image.shape[-1] == image.shape[-2] and 50 <= image.shape[-1] <= 150
    with pytest.raises(ValueError, match="size or min_size"):
        train_transforms(scale_jitter=(0.5, 1.5))


# ---------------------------------------------------------------- datamodule


def test_datamodule_batches(coco_dir: Path):
    ann, images = coco_dir / "ann.json", coco_dir / "images"
    calls = []
    dm = DetectionDataModule(
        ann, images, ann, images, batch_size=2, num_workers=0, size=64, size_divisible=32,
        prepare=lambda: calls.append(1),
    )
    dm.prepare_data()
    dm.setup("fit")
    assert calls == [1] and dm.num_classes == 2 and dm.class_names == ["cat", "dog"]
    assert dm.cat_ids == [3, 7] and dm.val_dataset.ann_file == ann
    batch = next(iter(dm.val_dataloader()))
    assert batch["images"].shape == (2, 3, 64, 64) and batch["image_ids"].tolist() == [5, 7]
    assert len(dm.train_dataloader()) == 2  # 3 images, batch 2, drop_last=False


def test_datamodule_category_mismatch(coco_dir: Path):
    data = json.loads((coco_dir / "ann.json").read_text())
    data["categories"][0]["name"] = "wolf"
    (coco_dir / "other.json").write_text(json.dumps(data))
    images = coco_dir / "images"
    dm = DetectionDataModule(coco_dir / "ann.json", images, coco_dir / "other.json", images)
    with pytest.raises(ValueError, match=r"categories differ.*other\.json"):
        dm.setup("fit")


# ---------------------------------------------------------------- NEON


def test_assign_boxes_to_tile_half_area_rule():
    boxes = np.array(
        [
            [390, 10, 410, 30],  # area 20*20 = 400, inside 10*20 = 200 = half: kept
            [380, 10, 410, 30],  # area 30*20 = 600, inside 200 < 300: dropped
            [500, 100, 540, 150],  # fully inside
            [790, 390, 820, 420],  # area 900, inside 10*10 = 100: dropped
            [600, 50, 600, 60],  # zero area: dropped
        ],
        dtype=float,
    )
    out = assign_boxes_to_tile(boxes, 400, 0, 800, 400)
    # clipped to x >= 400 then shifted by (-400, 0)
    np.testing.assert_array_equal(out, [[0, 10, 10, 30], [100, 100, 140, 150]])
    assert assign_boxes_to_tile(np.zeros((0, 4)), 0, 0, 10, 10).shape == (0, 4)


def test_tile_origins_cut_at_border():
    assert tile_origins(900, 500, 400) == [
        (0, 0, 400, 400), (400, 0, 800, 400), (800, 0, 900, 400),
        (0, 400, 400, 500), (400, 400, 800, 500), (800, 400, 900, 500),
    ]  # fmt: skip


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


@pytest.mark.slow
def test_prepare_neon(tmp_path: Path):
    if importlib.util.find_spec("deepforest") is None:
        pytest.skip("deepforest is not installed (make data)")
    root = neon.prepare_neon(tmp_path / "neon")
    stats = neon.summarize(root)
    assert 35 <= stats["train"]["images"] <= 45 and 540 <= stats["train"]["boxes"] <= 574
    assert 10 <= stats["val"]["images"] <= 18 and 340 <= stats["val"]["boxes"] <= 377
    assert 5 <= stats["train"]["side_min"] and stats["train"]["side_max"] <= 110

    for split in ("train", "val"):
        ds = CocoDetection(root / "annotations" / f"{split}.json", root / split)
        assert ds.class_names == ["Tree"] and ds.cat_ids == [1]
        coco = json.loads(ds.ann_file.read_text())
        size = {im["id"]: (im["width"], im["height"]) for im in coco["images"]}
        assert set(size) == {a["image_id"] for a in coco["annotations"]}  # no empty tiles
        for im in coco["images"]:
            with Image.open(root / split / im["file_name"]) as f:
                assert f.size == (im["width"], im["height"]) and f.size <= (400, 400)
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
