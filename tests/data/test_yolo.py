"""retina.data.yolo: YOLO input made from labelme's VOC example, and its checks."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from retina.data import CocoDetection
from retina.data.to_coco import cached_coco, convert, converted_datamodule
from retina.data.validate import AnnotationError
from tests.helpers import add_label_line


def yolo_dataset(root: Path, cache: Path, split: str = "train", **options) -> CocoDetection:
    return CocoDetection(cached_coco("yolo", root, split, cache, **options), root)


@pytest.mark.parametrize(
    ("damage", "error"),
    [
        (add_label_line("2 0.5 0.5 0.1"), r"labels/train/2011_000006\.txt:2: 4 fields, expected 5"),
        (add_label_line("2 0.5 0.5 0.1 0.1 0.3"), r"2011_000006\.txt:2: 6 fields, expected 5"),
        (add_label_line("3 0.5 0.5 0.1 0.1"),
         r"2011_000006\.txt:2: class index 3 is not in data.yaml names \[0, 1, 2\]"),
        (add_label_line("1.5 0.5 0.5 0.1 0.1"), r"2011_000006\.txt:2: class index '1.5' is not an"),
        (add_label_line("1 0.5 nan 0.1 0.1"), r"2011_000006\.txt:2: non-finite box"),
        (lambda r: (r / "images/train/2011_000006.jpg").write_bytes(b"GIF89a broken"),
         r"2011_000006\.txt: cannot read image .*images/train/2011_000006\.jpg"),
    ],
)  # fmt: skip
def test_yolo_bad_files_are_errors_or_skipped(yolo_root, tmp_path, caplog, damage, error):
    damage(yolo_root)
    with pytest.raises(AnnotationError, match=error):
        convert("yolo", yolo_root, "train")
    with caplog.at_level(logging.INFO, logger="retina.data"):
        ds = yolo_dataset(yolo_root, tmp_path / "cache", skip_bad=True)
    assert len(ds) == 2 and "2011_000006" not in " ".join(ds.file_names)
    (line,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "skipped 1 bad items (first: " in line and "2011_000006.txt" in line


def test_yolo_layout_variants_and_missing_pieces(yolo_root: Path, tmp_path: Path):
    # an image without a label file is an image without boxes
    (yolo_root / "labels/train/2011_000003.txt").unlink()
    coco, report = convert("yolo", yolo_root, "train")
    assert len(coco["images"]) == 3 and report.boxes == 7
    # a split given in data.yaml as a list file of images; a listed image that is missing
    (yolo_root / "val.txt").write_text("images/train/2011_000025.jpg\nimages/train/gone.jpg\n")
    data = yaml.safe_load((yolo_root / "data.yaml").read_text())
    data |= {"val": "val.txt", "names": dict(enumerate(data["names"]))}
    (yolo_root / "data.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(AnnotationError, match=r"gone\.jpg: image not found"):
        convert("yolo", yolo_root, "val")
    coco, report = convert("yolo", yolo_root, "val", skip_bad=True)
    assert [im["file_name"] for im in coco["images"]] == ["images/train/2011_000025.jpg"]
    assert report.skipped == 1 and [c["name"] for c in coco["categories"]][:1] == ["bus"]
    with pytest.raises(FileNotFoundError, match=r"images/test not found"):
        convert("yolo", yolo_root, "test")
    # out-of-image boxes are clipped and counted
    (yolo_root / "labels/train/2011_000003.txt").write_text("0 0.95 0.5 0.2 0.2\n")
    _, report = convert("yolo", yolo_root, "train")
    assert report.clipped == 1 and report.fixed == ["labels/train/2011_000003.txt"]
    (yolo_root / "data.yaml").unlink()
    with pytest.raises(FileNotFoundError, match=r"data\.yaml not found"):
        convert("yolo", yolo_root, "train")
    with pytest.raises(ValueError, match="VOC options"):
        converted_datamodule("yolo", yolo_root, classes=["a"])
