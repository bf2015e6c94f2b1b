"""The data readers at their edges: COCO files without ``iscrowd`` or without ``categories``,
VOC files with a ``<filename>`` of their own, a zero ``<size>``, what the conversion cache
watches, YOLO images without label files and bad YAML (mutants of these survived the suite)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from retina.data import CocoDetection, load_coco
from retina.data.to_coco import convert
from retina.data.validate import AnnotationError
from retina.data.voc import source_files


def test_coco_annotations_without_iscrowd_are_boxes(coco_dir: Path):
    # many tools leave iscrowd out: such an annotation is an ordinary box, not a crowd
    data = json.loads((coco_dir / "ann.json").read_text())
    for ann in data["annotations"]:
        if ann["iscrowd"] == 0:
            del ann["iscrowd"]
    (coco_dir / "plain.json").write_text(json.dumps(data))
    with_key = CocoDetection(coco_dir / "ann.json", coco_dir / "images")
    without = CocoDetection(coco_dir / "plain.json", coco_dir / "images")
    for i in range(len(with_key)):
        assert without[i][1]["boxes"].tolist() == with_key[i][1]["boxes"].tolist()
    assert sum(len(without[i][1]["boxes"]) for i in range(len(without))) == 3  # 2 + 1 (+ 0)


@pytest.mark.parametrize("content", [{"images": []}, {"categories": []}, []],
                         ids=["no_categories", "no_images", "a_list"])
def test_a_json_file_that_is_not_coco_is_named(tmp_path: Path, content):
    path = tmp_path / "other.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=r"other\.json is not a COCO file: it needs 'images' and "
                                         r"'categories'"):
        load_coco(path)


def edit_xml(xml_file: Path, edit) -> None:
    tree = ET.parse(xml_file)
    edit(tree.getroot())
    tree.write(xml_file)


def test_voc_reads_the_image_its_filename_names(voc_root: Path):
    # the photo renamed and <filename> saying so: found by its filename, not by the id
    (voc_root / "JPEGImages/2011_000006.jpg").rename(voc_root / "JPEGImages/renamed.jpg")
    edit_xml(voc_root / "Annotations/2011_000006.xml",
             lambda t: setattr(t.find("filename"), "text", "renamed.jpg"))
    coco, _ = convert("voc", voc_root, None)
    assert "JPEGImages/renamed.jpg" in [im["file_name"] for im in coco["images"]]
    # and without a <filename>: found by the id
    edit_xml(voc_root / "Annotations/2011_000003.xml", lambda t: t.remove(t.find("filename")))
    coco, _ = convert("voc", voc_root, None)
    assert "JPEGImages/2011_000003.jpg" in [im["file_name"] for im in coco["images"]]


@pytest.mark.parametrize("width,height", [(0, 375), (500, 0), (-1, 375)])
def test_voc_size_must_be_positive(voc_root: Path, width, height):
    def set_size(tree):
        tree.find("size/width").text, tree.find("size/height").text = str(width), str(height)

    edit_xml(voc_root / "Annotations/2011_000006.xml", set_size)
    with pytest.raises(AnnotationError, match=r"2011_000006\.xml: no <size> with positive integer"):
        convert("voc", voc_root, None)


def test_voc_cache_key_files_are_every_xml_image_and_the_split_file(voc_root: Path):
    (voc_root / "ImageSets" / "Main").mkdir(parents=True)
    (voc_root / "ImageSets/Main/train.txt").write_text("2011_000003\n")
    ids = ["2011_000003", "2011_000006", "2011_000025"]
    expected = ([voc_root / "Annotations" / f"{i}.xml" for i in ids]
                + [voc_root / "JPEGImages" / f"{i}.jpg" for i in ids])
    assert source_files(voc_root, None) == expected
    assert source_files(voc_root, "train") == [*expected, voc_root / "ImageSets/Main/train.txt"]


def test_yolo_image_without_a_label_file_has_no_box(yolo_root: Path):
    (yolo_root / "labels/train/2011_000003.txt").unlink()
    coco, report = convert("yolo", yolo_root, "train")
    (image,) = [im for im in coco["images"] if im["file_name"].endswith("2011_000003.jpg")]
    assert [a for a in coco["annotations"] if a["image_id"] == image["id"]] == []
    assert (report.dropped, report.clipped) == (0, 0)  # nothing made up and then dropped


def test_bad_yaml_names_its_line(yolo_root: Path):
    # line 3 (1-based) puts a mapping under a plain scalar: "mapping values are not allowed"
    (yolo_root / "data.yaml").write_text("nc: 3\nnames: bus\n  car: x\n")
    with pytest.raises(AnnotationError, match=r"data\.yaml:3: not valid YAML"):
        convert("yolo", yolo_root, "train")
