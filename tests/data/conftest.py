"""Synthetic COCO files for the tests of retina.data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


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
