"""retina.data.voc: Pascal VOC input on labelme's real VOC example, and its checks."""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch
from torchvision.ops import box_iou

from retina.data import CocoDetection, load_coco
from retina.data.to_coco import cached_coco, convert
from retina.data.validate import AnnotationError
from tests.helpers import LABELME_COCO, LABELME_VOC, evaluate


def edit_xml(xml_file: Path, edit) -> None:
    tree = ET.parse(xml_file)
    edit(tree.getroot())
    tree.write(xml_file)


def voc_dataset(root: Path, cache: Path, **options) -> CocoDetection:
    return CocoDetection(cached_coco("voc", root, None, cache, **options), root)


# ---------------------------------------------------------------- real fixtures


def test_labelme_voc_boxes_match_its_coco_json(labelme: Path, tmp_path: Path):
    """The VOC example and the COCO example label the same photos independently (drawn
    rectangles vs boxes of polygons): every VOC box has exactly one COCO box of its class
    with IoU >= 0.8, and only the objects the VOC example leaves out are unmatched."""
    voc = voc_dataset(labelme / LABELME_VOC, tmp_path)
    coco = CocoDetection(labelme / LABELME_COCO / "annotations.json", labelme / LABELME_COCO)
    assert len(voc) == len(coco) == 3 and sum(len(voc[i][1]["labels"]) for i in range(3)) == 9
    coco_index = {Path(n).name: i for i, n in enumerate(coco.file_names)}
    unmatched = []
    for i, name in enumerate(voc.file_names):
        v_image, v = voc[i]
        c_image, c = coco[coco_index[Path(name).name]]
        assert torch.equal(v_image, c_image)  # the same photo, decoded the same way
        v_names = [voc.class_names[k] for k in v["labels"]]
        c_names = [coco.class_names[k] for k in c["labels"]]
        iou = box_iou(v["boxes"], c["boxes"])  # (n_voc, n_coco)
        same_class = torch.tensor([[a == b for b in c_names] for a in v_names])
        match = (iou >= 0.8) & same_class  # (n_voc, n_coco)
        assert match.sum(1).tolist() == [1] * len(v_names), name
        assert match.sum(0).max() <= 1
        unmatched += [n for n, m in zip(c_names, match.any(0)) if not m]
    assert sorted(unmatched) == ["bottle", "chair", "sofa"]


# ---------------------------------------------------------------- VOC options and checks


def test_voc_splits_and_one_based(voc_root: Path, tmp_path: Path):
    (voc_root / "ImageSets" / "Main").mkdir(parents=True)
    (voc_root / "ImageSets/Main/train.txt").write_text("2011_000025\n2011_000003\n")
    coco, _ = convert("voc", voc_root, "train")
    assert [im["file_name"] for im in coco["images"]] == [
        "JPEGImages/2011_000025.jpg", "JPEGImages/2011_000003.jpg"
    ]  # split-file order
    # classes are collected over every XML file, so a split without persons still has them
    assert [c["name"] for c in coco["categories"]] == ["bus", "car", "person"]
    assert coco["annotations"][1]["bbox"] == [1.0, 99.0, 106.0, 183.0]  # xmin 1, xmax 107
    shifted, _ = convert("voc", voc_root, "train", one_based=True)
    assert shifted["annotations"][1]["bbox"] == [0.0, 98.0, 107.0, 184.0]
    with pytest.raises(FileNotFoundError, match=r"ImageSets/Main/val\.txt not found.*null"):
        convert("voc", voc_root, "val")


def test_voc_difficult_ignored_or_kept(voc_root: Path, tmp_path: Path):
    def make_difficult(tree):
        tree.findall("object")[1].find("difficult").text = "1"  # the second person

    edit_xml(voc_root / "Annotations/2011_000003.xml", make_difficult)
    ignored = voc_dataset(voc_root, tmp_path / "a")
    kept = voc_dataset(voc_root, tmp_path / "b", difficult="keep")
    # not a training target when ignored, an ordinary box when kept
    assert len(ignored[0][1]["boxes"]) == 1 and len(kept[0][1]["boxes"]) == 2
    crowd = [a["iscrowd"] for a in load_coco(ignored.ann_file).dataset["annotations"]]
    assert crowd == [0, 1] + [0] * 7

    # evaluation: detecting only the other 8 boxes is perfect when the difficult box is
    # ignored; a detection on the difficult box is then neither a hit nor a false alarm
    ids, dets = [], []
    for i in range(len(ignored)):
        _, t = ignored[i]
        ids.append(t["image_id"])
        dets.append({"boxes": t["boxes"].as_subclass(torch.Tensor), "labels": t["labels"],
                     "scores": torch.ones(len(t["labels"]))})  # fmt: skip
    assert evaluate(ignored, ids, dets)["mAP"] == pytest.approx(1.0)
    assert evaluate(kept, ids, dets)["mAP"] < 0.99  # the difficult person is now a miss
    person = ignored.class_names.index("person")
    dets[0] = {
        "boxes": torch.cat([dets[0]["boxes"], kept[0][1]["boxes"][1:].as_subclass(torch.Tensor)]),
        "labels": torch.cat([dets[0]["labels"], torch.tensor([person])]),
        "scores": torch.cat([dets[0]["scores"], torch.tensor([0.5])]),
    }
    assert evaluate(ignored, ids, dets)["mAP"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="difficult='drop'"):
        convert("voc", voc_root, None, difficult="drop")


def _no_size(root: Path) -> None:
    edit_xml(root / "Annotations/2011_000006.xml", lambda t: t.remove(t.find("size")))


def _wrong_size(root: Path) -> None:
    edit_xml(root / "Annotations/2011_000006.xml",
             lambda t: setattr(t.find("size/width"), "text", "400"))  # fmt: skip


def _broken_xml(root: Path) -> None:
    xml = root / "Annotations/2011_000006.xml"
    xml.write_text(xml.read_text()[:300])


def _missing_image(root: Path) -> None:
    (root / "JPEGImages/2011_000006.jpg").unlink()


def _unreadable_image(root: Path) -> None:
    (root / "JPEGImages/2011_000006.jpg").write_bytes(b"this is not a JPEG file")


@pytest.mark.parametrize(
    ("damage", "options", "error", "skipped"),
    [
        (_no_size, {}, r"Annotations/2011_000006\.xml: no <size>", 1),
        (_wrong_size, {}, r"2011_000006\.xml: <size> says 400x375 but .* is 500x375", 1),
        (_broken_xml, {}, r"Annotations/2011_000006\.xml:\d+: not valid XML", 1),
        (_missing_image, {}, r"2011_000006\.xml: image not found: .*2011_000006\.jpg", 1),
        (_unreadable_image, {}, r"2011_000006\.xml: cannot read image .*2011_000006\.jpg", 1),
        (None, {"classes": ["bus", "car"]},
         r"2011_000003\.xml: object 1 has class 'person', not in the class list", 2),
    ],
)  # fmt: skip
def test_voc_bad_files_are_errors_or_skipped(
    voc_root, tmp_path, caplog, damage, options, error, skipped
):
    if damage is not None:
        damage(voc_root)
    with pytest.raises(AnnotationError, match=error):
        convert("voc", voc_root, None, **options)
    with caplog.at_level(logging.INFO, logger="retina.data"):
        ds = voc_dataset(voc_root, tmp_path / "cache", skip_bad=True, **options)
    assert len(ds) == 3 - skipped
    (line,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"skipped {skipped} bad items" in line and error.split(":")[0].replace("\\", "") in line


def test_voc_clipped_and_degenerate_boxes_reported_once(voc_root, tmp_path, caplog):
    def damage(tree):
        objs = tree.findall("object")
        objs[0].find("bndbox/xmax").text = "600"  # crosses the right border (W = 500)
        objs[1].find("bndbox/xmin").text = "600"  # xmin > xmax: degenerate
        objs[2].find("bndbox/ymin").text = "-20"  # crosses the top border

    edit_xml(voc_root / "Annotations/2011_000025.xml", damage)
    edit_xml(voc_root / "Annotations/2011_000003.xml",
             lambda t: setattr(t.find("object/bndbox/xmax"), "text", "191"))  # zero width
    with caplog.at_level(logging.INFO, logger="retina.data"):
        ds = voc_dataset(voc_root, tmp_path)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert ("7 boxes; dropped 2 degenerate boxes, clipped 2 (first: "
            "Annotations/2011_000003.xml, Annotations/2011_000025.xml)") in warnings[0]
    _, target = ds[2]  # 2011_000025: bus clipped to x2 = 500, car clipped to y1 = 0
    torch.testing.assert_close(
        target["boxes"].as_subclass(torch.Tensor),
        torch.tensor([[84.0, 20.384615, 500.0, 373.384615], [409.0, 0.0, 500.0, 266.0]]),
    )
    assert target["labels"].tolist() == [0, 1]  # bus, car (the second bus was dropped)
    # the converted ground truth (used by pycocotools) holds the same fixed boxes
    bboxes = [a["bbox"] for a in load_coco(ds.ann_file).dataset["annotations"]]
    assert len(bboxes) == 7 and [409.0, 0.0, 91.0, 266.0] in bboxes
