"""retina.data.datamodule: batches, category checks and class-frequency weights."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from retina.data import DetectionDataModule
from retina.data.datamodule import class_frequency_weights


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


def test_class_frequency_weights_formulas():
    counts = [10, 30, 0, 60]  # shares 0.1, 0.3, 0, 0.6
    inv = [1 / 10, 1 / 30, 1 / 1, 1 / 60]  # a class without boxes counts as 1
    mean = sum(inv) / 4
    assert class_frequency_weights(counts, "inverse") == pytest.approx([v / mean for v in inv])
    log = [1 / math.log(1.1 + f) for f in (0.1, 0.3, 0.0, 0.6)]
    assert class_frequency_weights(counts, "log") == pytest.approx(log)
    with pytest.raises(ValueError, match="loss.class_weights"):
        class_frequency_weights(counts, "sqrt")


def test_datamodule_errors_name_what_is_missing(coco_dir: Path):
    with pytest.raises(ValueError, match=r"data.root.*data.val_ann, data.val_images"):
        DetectionDataModule(coco_dir / "ann.json", coco_dir / "images")
    dm = DetectionDataModule(coco_dir / "ann.json", coco_dir / "images", coco_dir / "ann.json",
                             coco_dir / "images")
    for read in (lambda: dm.class_names, dm.train_dataloader, dm.class_counts):
        with pytest.raises(RuntimeError, match="call setup"):
            read()
    with pytest.raises(ValueError, match="loss.class_weights must be null, inverse or log"):
        class_frequency_weights([1, 2], "sqrt")
