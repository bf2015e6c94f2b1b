"""retina.data.coco set-up checks beyond pycocotools: every image decoded once (cached by size
and mtime), ids used twice, entries pycocotools cannot index."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
import torch
from PIL import Image

from retina.data import CocoDetection, cache
from retina.data.validate import AnnotationError
from tests.helpers import coco_edit, truncate


def test_a_truncated_image_is_named_at_set_up_or_skipped_and_counted(coco_dir: Path, caplog):
    truncate(coco_dir / "images" / "a.png")
    with Image.open(coco_dir / "images" / "a.png") as im:
        assert im.size == (30, 20)  # the header alone passes: only decoding finds it
    with pytest.raises(AnnotationError, match=r"ann\.json: image id 10: cannot decode "
                                              r".*images/a\.png: OSError: .*truncated"):
        CocoDetection(coco_dir / "ann.json", coco_dir / "images")
    with caplog.at_level(logging.INFO, logger="retina.data"):
        ds = CocoDetection(coco_dir / "ann.json", coco_dir / "images", skip_bad=True)
    assert ds.image_ids == [5, 7] and ds.report.skipped == 1
    (line,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "2 images, 1 boxes;" in line and "skipped 1 bad items (first: " in line
    assert "image id 10: cannot decode" in line and "a.png" in line


def test_an_image_of_another_size_than_its_entry_is_an_error_at_set_up(coco_dir: Path):
    bad = coco_edit(coco_dir, lambda data: data["images"][1].update(width=17))  # b.png is 16x16
    with pytest.raises(AnnotationError, match=r"image id 5: .*b\.png is 16x16 \(WxH\), the "
                                              r"annotation file says 17x16"):
        CocoDetection(bad, coco_dir / "images")


def test_images_decode_once_then_come_from_the_cache_until_they_change(coco_dir, tmp_path,
                                                                       monkeypatch):
    decoded = []
    decode_size = cache.decode_size
    monkeypatch.setattr(cache, "decode_size", lambda p: decoded.append(p.name) or decode_size(p))
    args = (coco_dir / "ann.json", coco_dir / "images", None, False, tmp_path / "cache")
    CocoDetection(*args)
    assert sorted(decoded) == ["a.png", "b.png", "c.png"]
    (cache_file,) = (tmp_path / "cache").iterdir()
    decoded.clear()
    CocoDetection(*args)
    assert decoded == []  # the second set-up decodes nothing
    a = coco_dir / "images" / "a.png"
    os.utime(a, ns=(a.stat().st_atime_ns, a.stat().st_mtime_ns + 10**9))  # touched: again
    CocoDetection(*args)
    assert decoded == ["a.png"]
    truncate(a)  # changed in place after it was cached: found
    with pytest.raises(AnnotationError, match="image id 10: cannot decode"):
        CocoDetection(*args)
    assert json.loads(cache_file.read_text())["version"] == cache.DECODE_CACHE_VERSION
    blocked = tmp_path / "file"
    blocked.write_text("")  # a cache folder that cannot be made: set-up goes on uncached
    CocoDetection(coco_dir / "ann.json", coco_dir / "images", skip_bad=True,
                  cache_dir=blocked / "cache")


def test_a_decode_error_in_a_loader_worker_names_the_file_and_image_id(coco_dir: Path):
    ds = CocoDetection(coco_dir / "ann.json", coco_dir / "images")
    truncate(coco_dir / "images" / "a.png")  # broken after set-up
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=1)
    with pytest.raises(OSError, match=r"cannot decode .*images/a\.png \(image id 10\)"):
        list(loader)


@pytest.mark.parametrize(("edit", "error", "kept"), [
    (lambda d: d["images"].append(dict(d["images"][0], file_name="b.png")),
     r"image id 10 is listed 2 times in images \(\['a\.png', 'b\.png'\]\); pycocotools would "
     r"keep only the last, and its 3 annotations", [5, 7]),
    (lambda d: d["annotations"][4].update(id=1),  # image 5's box takes the id of image 10's
     r"annotation id 1 is used 2 times \(image ids \[10, 5\]\)", [7]),
], ids=["image id twice", "annotation id twice"])
def test_ids_used_twice_are_named_or_skipped(coco_dir: Path, edit, error, kept):
    bad = coco_edit(coco_dir, edit)
    with pytest.raises(AnnotationError, match=error):
        CocoDetection(bad, coco_dir / "images")
    ds = CocoDetection(bad, coco_dir / "images", skip_bad=True)
    assert ds.image_ids == kept and ds.report.skipped == 1


@pytest.mark.parametrize(("edit", "error"), [
    (lambda d: d["categories"].append({"id": 7, "name": "wolf"}),
     r"bad\.json: category id 7 is listed 2 times \(\['dog', 'wolf'\]\)"),
    (lambda d: d["annotations"][2].pop("image_id"), r"bad\.json: annotations\[2\] has no image_id"),
    (lambda d: d["images"][0].pop("id"), r"bad\.json: images\[0\] has no id"),
    (lambda d: d["categories"][0].pop("name"), r"bad\.json: categories\[0\] has no name"),
])
def test_entries_pycocotools_cannot_index_are_errors_naming_them(coco_dir: Path, edit, error):
    with pytest.raises(ValueError, match=error):
        CocoDetection(coco_edit(coco_dir, edit), coco_dir / "images", skip_bad=True)
