"""retina.data.to_coco: VOC and YOLO of the same boxes give the same data, and the
conversion cache (the command line is in e2e/test_data.py)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from hydra.utils import instantiate

from retina.data import CocoDetection, load_coco
from retina.data import to_coco as convert_module
from retina.data.to_coco import cached_coco
from retina.training.config import compose_run
from tests.helpers import evaluate, write_yolo


def fake_detections(ds: CocoDetection) -> tuple[list[int], list[dict[str, torch.Tensor]]]:
    """Detections made from the ground truth: shifted boxes (IoU from 1 down to ~0.5),
    a wrong-class copy and a false positive per image, all with distinct scores."""
    ids, dets = [], []
    for i in range(len(ds)):
        _, t = ds[i]
        gt = t["boxes"].as_subclass(torch.Tensor)  # (n, 4)
        shift = (torch.arange(len(gt), dtype=torch.float32) * 9 % 40)[:, None]  # (n, 1)
        boxes = torch.cat([gt + shift, gt[:1] * 0.9, torch.tensor([[5.0, 5.0, 60.0, 50.0]])])
        labels = torch.cat([t["labels"], (t["labels"][:1] + 1) % ds.num_classes,
                            torch.tensor([i % ds.num_classes])])  # fmt: skip
        scores = torch.linspace(0.95, 0.3, len(boxes)) - 0.01 * i
        ids.append(t["image_id"])
        dets.append({"boxes": boxes, "scores": scores, "labels": labels})
    return ids, dets


def test_voc_and_yolo_of_the_same_boxes_train_and_evaluate_alike(voc_root: Path, tmp_path: Path):
    classes = ["bus", "car", "person"]  # the VOC class list: collected and sorted
    yolo_root = write_yolo(voc_root, tmp_path / "yolo", classes)
    batches, datasets = [], []
    for overrides in (
        ["data=voc", f"data.root={voc_root}", "data.train_split=null", "data.val_split=null"],
        ["data=yolo", f"data.root={yolo_root}", "data.val_split=train"],
    ):
        # square 96-px inputs: the aerial recipe's resize (the photo one keeps the aspect ratio)
        cfg = compose_run([*overrides, "experiment=aerial", f"data.cache_dir={tmp_path / 'cache'}",
                           "data.size=96", "data.num_workers=0", "data.batch_size=3"],
                          tmp_path / "run")
        dm = instantiate(cfg.data)
        dm.prepare_data()
        dm.setup("fit")
        assert dm.class_names == classes
        batches.append(next(iter(dm.val_dataloader())))
        datasets.append(CocoDetection(dm.val_ann, dm.val_images))
    voc, yolo = datasets

    # identical training targets, raw and as batched for the network
    for i in range(3):
        (vi, vt), (yi, yt) = voc[i], yolo[i]
        assert torch.equal(vi, yi) and vt["image_id"] == yt["image_id"]
        assert torch.equal(vt["labels"], yt["labels"])
        torch.testing.assert_close(vt["boxes"], yt["boxes"], atol=1e-4, rtol=0)
    vb, yb = batches
    assert torch.equal(vb["images"], yb["images"]) and torch.equal(vb["labels"], yb["labels"])
    torch.testing.assert_close(vb["boxes"], yb["boxes"], atol=1e-4, rtol=0)

    # identical COCO evaluation of the same detections (category ids differ: VOC 1..K,
    # YOLO the class indices; each dataset maps labels to its own ids)
    assert voc.cat_ids == [1, 2, 3] and yolo.cat_ids == [0, 1, 2]
    ids, dets = fake_detections(voc)
    stats_voc, stats_yolo = evaluate(voc, ids, dets), evaluate(yolo, ids, dets)
    assert stats_voc == stats_yolo
    assert 0.2 < stats_voc["mAP"] < 0.9  # a real mix of hits and misses, not a trivial 0 or 1


def test_conversion_is_cached_until_the_files_change(yolo_root, tmp_path, caplog, monkeypatch):
    cache = tmp_path / "cache"
    with caplog.at_level(logging.INFO, logger="retina.data.to_coco"):
        first = cached_coco("yolo", yolo_root, "train", cache)
        written = first.stat().st_mtime_ns
        again = cached_coco("yolo", yolo_root, "train", cache)  # prepare_data runs twice
        (line,) = [r.getMessage() for r in caplog.records]  # reported once per run
        assert "split train: 3 images, 9 boxes" in line
        monkeypatch.setattr(convert_module, "_reported", set())  # as in a new process
        cached_coco("yolo", yolo_root, "train", cache)
        assert [r.getMessage() for r in caplog.records] == [line, line]  # from the cache
    assert again == first and first.stat().st_mtime_ns == written  # reused, not rewritten
    label = yolo_root / "labels/train/2011_000003.txt"
    label.write_text(label.read_text() + "1 0.5 0.5 0.1 0.1\n")
    os.utime(label, ns=(written + 10**9, written + 10**9))  # a later modification time
    changed = cached_coco("yolo", yolo_root, "train", cache)
    assert changed == first and len(load_coco(changed).dataset["annotations"]) == 10
    # other options are another cache file
    assert cached_coco("yolo", yolo_root, "train", cache, skip_bad=True) != first


def test_an_empty_validation_split_is_reported_at_set_up(yolo_root: Path, tmp_path: Path, caplog):
    # a Roboflow-style export with an empty valid/ folder
    (yolo_root / "images" / "valid").mkdir(parents=True)
    dm = convert_module.converted_datamodule("yolo", yolo_root, val_split="valid",
                                             cache_dir=tmp_path / "cache", size=128)
    dm.prepare_data()
    with caplog.at_level(logging.WARNING):
        dm.setup("fit")
    assert dm.no_validation == f"the validation split 'valid' of {yolo_root} has no images"
    assert "no validation numbers" in caplog.text and "data.val_split=SPLIT" in caplog.text

    dm = convert_module.converted_datamodule("yolo", yolo_root, val_split="train",
                                             cache_dir=tmp_path / "cache", size=128)
    dm.prepare_data()
    dm.setup("fit")
    assert dm.no_validation is None
