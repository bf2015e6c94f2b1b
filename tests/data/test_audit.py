"""retina.data.audit: a dataset counted as its files say, duplicates, boxes at the input."""

import shutil
from pathlib import Path

import numpy as np

from retina.data.audit import boxes_at_input, count_split, duplicate_files
from retina.data.coco import CocoDetection


def test_counts_are_those_of_the_annotation_file(coco_dir: Path):
    # a.png: a box, one crossing the right border (x 25-35 of 30), a crowd box; b.png: a
    # degenerate box (w 0) and a box; c.png: no box
    counts = count_split("train", coco_dir / "ann.json")
    assert (counts.images, counts.annotations) == (3, 5)
    assert counts.per_class == {"cat": 3, "dog": 2}  # label order: category ids 3, 7
    assert (counts.crowd, counts.degenerate, counts.outside, counts.without_boxes) == (1, 1, 1, 1)
    assert counts.examples == {"outside": ["a.png"], "degenerate": ["b.png"],
                               "without_boxes": ["c.png"]}


def test_identical_files_are_grouped(coco_dir: Path):
    images = coco_dir / "images"
    shutil.copy(images / "a.png", images / "a_copy.png")
    files = sorted(images.glob("*.png"))
    assert duplicate_files([*files, files[0]]) == [[images / "a.png", images / "a_copy.png"]]


def test_boxes_at_the_input_size(coco_dir: Path):
    ds = CocoDetection(coco_dir / "ann.json", coco_dir / "images")
    at = boxes_at_input(ds, size=60)  # b.png 16 x 16 -> 60 x 60: x 3.75
    b = ds.image_ids.index(5)
    np.testing.assert_allclose(at.boxes[at.image_index == b], [[3.75, 3.75, 18.75, 18.75]])
    assert at.input_hw[b].tolist() == [60, 60]
    # at 4 x 4: b.png's 4 x 4 box is 1 x 1; a.png (30 x 20) its 10 x 5 box 1.3 x 1 and its
    # clipped 5 x 5 box 0.7 x 1, under a pixel wide (images in id order: b, c, a)
    shrunk = boxes_at_input(ds, size=4)
    assert shrunk.vanished.tolist() == [False, False, True]
    assert len(boxes_at_input(ds, size=60, max_images=2).images) == 2
