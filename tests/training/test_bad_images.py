"""A COCO dataset with a truncated PNG: training stops at set-up naming the file, or with
``data.skip_bad=true`` trains on the rest and counts the skip in the report line."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from retina.data.validate import AnnotationError
from retina.training.config import ROOT
from retina.training.module import DetectionModule
from retina.training.run import train
from tests.helpers import TRAINED_SIZE, truncate

NEON = ROOT / "data" / "neon_trees"


@pytest.fixture
def coco_with_truncated_png(tmp_path: Path) -> list[str]:
    """Four NEON validation tiles as a COCO dataset (train: 1-3, val: 4), tile 2 truncated;
    returns the ``data=coco`` overrides."""
    val = json.loads((NEON / "annotations" / "val.json").read_text())
    images = tmp_path / "coco"
    images.mkdir()
    for split, ids in (("train", {1, 2, 3}), ("val", {4})):
        subset = {**val, "images": [im for im in val["images"] if im["id"] in ids],
                  "annotations": [a for a in val["annotations"] if a["image_id"] in ids]}
        (tmp_path / f"{split}.json").write_text(json.dumps(subset))
        for im in subset["images"]:
            shutil.copy(NEON / "val" / im["file_name"], images)
    truncate(images / "SOAP_061_x0000_y0000.png")  # image id 2
    return ["data=coco", "experiment=aerial",  # NEON tiles
            f"data.train_ann={tmp_path / 'train.json'}", f"data.train_images={images}",
            f"data.val_ann={tmp_path / 'val.json'}", f"data.val_images={images}",
            f"data.cache_dir={tmp_path / 'cache'}", "debug=fdr",
            f"data.size={TRAINED_SIZE}"]  # at 128 px P7 is 1x1: GroupNorm refuses one image


def test_a_truncated_png_stops_training_before_the_first_step_naming_it(
        tiny_cfg, coco_with_truncated_png, monkeypatch):
    steps = []
    monkeypatch.setattr(DetectionModule, "training_step", lambda *a: steps.append(a))
    with pytest.raises(AnnotationError, match=r"train\.json: image id 2: cannot decode "
                                              r".*coco/SOAP_061_x0000_y0000\.png: OSError"):
        train(tiny_cfg(*coco_with_truncated_png))
    assert steps == []


def test_with_skip_bad_it_trains_on_the_rest_and_the_report_counts_the_skip(
        tiny_cfg, coco_with_truncated_png, caplog):
    with caplog.at_level(logging.INFO, logger="retina.data"):
        metrics = train(tiny_cfg(*coco_with_truncated_png, "data.skip_bad=true"))
    assert metrics["global_step"] == 1 and "val/mAP" in metrics
    (line,) = [r.getMessage() for r in caplog.records
               if r.levelno == logging.WARNING and "train.json" in r.getMessage()]
    assert "train.json: 2 images," in line and "skipped 1 bad items" in line
    assert "SOAP_061_x0000_y0000.png" in line
