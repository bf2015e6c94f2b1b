"""retina check (retina.training.check) on the real NEON data and on a dataset made from it
whose boxes the default anchors cannot reach; retina train's set-up line."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate
from PIL import Image

from retina.data.coco import CocoDetection
from retina.data.tile import main as tile_main
from retina.training.check import (
    WARN_BELOW,
    Geometry,
    check_data,
    level_shapes,
    run_check,
    setup_line,
)
from retina.training.config import ROOT, compose_run

NEON = ROOT / "data" / "neon_trees"
# torchvision's RetinaNet anchors (its AnchorGenerator: 32-512 px, 3 scales, 3 ratios)
TORCHVISION_ANCHORS = [
    "model.detector.anchors.anchor_scale=4", "model.detector.anchors.scales_per_octave=3",
    "model.detector.anchors.ratios=[0.5,1.0,2.0]", "model.detector.anchors.offset=0.0",
    "model.detector.anchors.integer_cells=true", "model.detector.anchors.strides_from_input=true"]
QUICK = ["check.duplicates=false", "check.suggest=false"]


def check(tmp_path: Path, *overrides: str) -> dict:
    cfg = compose_run(["data.num_workers=0", *overrides], tmp_path / "run", name="check")
    return check_data(cfg)[0]


def test_level_shapes_are_the_maps_of_the_padded_input():
    assert level_shapes(448, 448, 32, (3, 4, 5, 6, 7)) == [(56, 56), (28, 28), (14, 14),
                                                           (7, 7), (4, 4)]
    # 800 x 1066 pads to 800 x 1088; P7 = ceil(ceil(1088 / 32) / 4) = ceil(34 / 4) = 9
    assert level_shapes(800, 1066, 32, (3, 7)) == [(100, 136), (7, 9)]


def test_neon_counts_are_the_annotation_files_and_the_default_reaches_its_boxes(tmp_path):
    report = check(tmp_path, *QUICK)
    for split in ("train", "val"):
        ann = json.loads((NEON / "annotations" / f"{split}.json").read_text())
        counts = report["splits"][split]
        assert counts["images"] == len(ann["images"]) and counts["annotations"] == len(
            ann["annotations"])
        assert counts["per_class"] == {"Tree": len(ann["annotations"])}
        assert counts["ceiling"]["boxes"] == len(ann["annotations"])  # none crowd or degenerate
    assert report["ceiling"] >= 0.95 and not report["warnings"]
    assert report["assigner"].startswith("ATSSAssigner")  # the default: GFL


@pytest.mark.slow  # two checks of 9 anchors per location
def test_torchvision_anchors_reach_fewer_neon_boxes(tmp_path):
    # RetinaNet's MaxIoU rule (IoU >= 0.5): our small square anchors against torchvision's
    ours = check(tmp_path / "ours", "experiment=neon_retinanet", *QUICK)
    theirs = check(tmp_path / "tv", "experiment=neon_retinanet", *TORCHVISION_ANCHORS, *QUICK)
    assert ours["ceiling"] >= 0.95 > theirs["ceiling"]
    small = theirs["splits"]["train"]["ceiling"]["per_size"][0]
    assert small["side_px"] == [8, 16] and small["ceiling"] == 0.0  # under their 32 px


@pytest.fixture(scope="module")
def mosaic(tmp_path_factory) -> list[str]:
    """NEON's 25 full training tiles pasted into one 2000 x 2000 image: at the 448-px input its
    boxes are 2-23 px (median 9), the anchors' stride 8 is too coarse for them. Returns the
    data=coco overrides (train = val)."""
    root = tmp_path_factory.mktemp("mosaic")
    coco = json.loads((NEON / "annotations" / "train.json").read_text())
    tiles = [im for im in coco["images"] if (im["width"], im["height"]) == (400, 400)][:25]
    canvas, annotations = Image.new("RGB", (2000, 2000)), []
    for k, im in enumerate(tiles):
        x0, y0 = 400 * (k % 5), 400 * (k // 5)
        canvas.paste(Image.open(NEON / "train" / im["file_name"]).convert("RGB"), (x0, y0))
        for a in (a for a in coco["annotations"] if a["image_id"] == im["id"]):
            x, y, w, h = a["bbox"]
            annotations.append({**a, "id": len(annotations) + 1, "image_id": 1,
                                "bbox": [x + x0, y + y0, w, h]})
    (root / "images").mkdir()
    canvas.save(root / "images" / "mosaic.png")
    ann = root / "mosaic.json"
    ann.write_text(json.dumps({"images": [{"id": 1, "file_name": "mosaic.png", "width": 2000,
                                           "height": 2000}],
                               "annotations": annotations, "categories": coco["categories"]}))
    images = root / "images"
    return ["data=coco", "experiment=aerial", f"data.train_ann={ann}",
            f"data.train_images={images}", f"data.val_ann={ann}", f"data.val_images={images}",
            f"data.cache_dir={root / 'cache'}"]


@pytest.mark.slow  # three checks and a tiling
def test_boxes_the_anchors_cannot_reach_get_a_warning_and_a_change_that_lifts_them(
        tmp_path, mosaic):
    report = check(tmp_path / "a", *mosaic, "check.duplicates=false")
    assert report["ceiling"] < WARN_BELOW
    assert report["warnings"][0].startswith(f"recall ceiling {report['ceiling']:.3f} < 0.9")
    by_size = report["splits"]["train"]["ceiling"]["per_size"]
    assert by_size[0]["side_px"] == [0, 8] and by_size[0]["ceiling"] < 0.6  # no centre inside
    changes = [s for s in report["suggestions"] if s["overrides"]]
    assert changes and changes[0]["overrides"] == ["data.size=896"]  # input x2
    applied = check(tmp_path / "b", *mosaic, *changes[0]["overrides"], *QUICK)
    assert applied["ceiling"] == changes[0]["ceiling"] > WARN_BELOW  # measured, as foretold

    # the tiles it suggests, cut by retina tile: their boxes at their own resolution
    (tiled,) = [s for s in report["suggestions"] if s["command"]]
    assert tiled["ceiling"] > WARN_BELOW and "tile=448" in tiled["command"]
    ann, images = mosaic[2].split("=", 1)[1], mosaic[3].split("=", 1)[1]
    out = tmp_path / "tiles"
    assert tile_main(["format=coco", f"ann={ann}", f"images={images}", f"out={out}",
                      "tile=448", "overlap=0.25"]) == 0
    on_tiles = check(tmp_path / "c", "data=coco", "experiment=aerial",
                     f"data.train_ann={out / 'annotations.json'}",
                     f"data.train_images={out / 'images'}",
                     f"data.val_ann={out / 'annotations.json'}",
                     f"data.val_images={out / 'images'}", *QUICK)
    assert on_tiles["ceiling"] > WARN_BELOW


def test_retina_train_says_it_at_set_up(tmp_path, mosaic):
    cfg = compose_run([*mosaic, "data.num_workers=0"], tmp_path / "run")
    dataset = CocoDetection(cfg.data.train_ann, cfg.data.train_images)
    value, line = setup_line(dataset, instantiate(cfg.model.detector.anchors),
                             instantiate(cfg.loss.assigner), Geometry.of(cfg.data))
    assert value < WARN_BELOW
    assert line.startswith(f"recall ceiling {value:.3f}: ") and "`retina check`" in line
    assert "(1 training images, input 448 x 448 px (square))" in line


def test_check_writes_its_json_and_figure(tmp_path):
    cfg = compose_run(["data.num_workers=0", f"check.out={tmp_path / 'out'}",
                       "check.suggest=false"], tmp_path / "run", name="check")
    report = run_check(cfg)
    written = json.loads((tmp_path / "out" / "check.json").read_text())
    assert written == json.loads(json.dumps(report))
    assert written["duplicates"] == [] and written["duplicates_across_splits"] == 0
    assert (tmp_path / "out" / "check.png").stat().st_size > 50_000
    assert np.isclose(sum(written["splits"]["train"]["ceiling"]["best_iou_histogram"]["counts"]),
                      written["splits"]["train"]["ceiling"]["boxes"])
    shutil.rmtree(tmp_path / "out")
