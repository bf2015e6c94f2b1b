"""Helpers shared by several test files (the fixtures are in the conftest.py files)."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import struct
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from retina.data import CocoDetection, load_coco
from retina.model.anchors import AnchorGenerator
from retina.training.coco_eval import coco_evaluate, to_coco_results
from retina.training.config import ROOT

# ---------------------------------------------------------------- tiny training runs

# Small and fast: NEON tiles at 128 px, a thin head, no workers.
TINY = [
    "data.size=128",
    "data.num_workers=0",
    "data.batch_size=2",
    "model.detector.head.channels=32",
    "model.detector.head.num_convs=1",
    "model.detector.fpn_channels=32",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


# The shared trained models (``trained_retinanet``/``trained_gfl`` in tests/conftest.py):
# two steps of TINY at 160 px, not 128: P7 is then 2x2, and GroupNorm(32) over 32 channels
# accepts a single image (at 1x1 it sees one value per group). Two steps leave scores near the
# prior (0.01): the low threshold keeps detections, so checks on them have boxes to check.
TRAINED_SIZE = 160
TRAINED = [f"data.size={TRAINED_SIZE}", "model.postprocess.score_thresh=0.005",
           "trainer.max_epochs=1", "trainer.limit_train_batches=2", "callbacks.lr_monitor=null",
           "trainer.check_val_every_n_epoch=1", "trainer.log_every_n_steps=1"]


def evaluated(ckpt: Path, *data_args: str, data: str | None = None) -> dict[str, float]:
    """``retina eval``'s numbers of a checkpoint on CPU: its own data, or ``data=NAME`` with
    ``data.KEY=VALUE`` arguments (alone: changes to its own)."""
    from retina.eval.settings import compose_evaluation
    from retina.training.run import evaluate_checkpoint

    data_cfg, _ = compose_evaluation(data, list(data_args), "retina eval")
    return evaluate_checkpoint(ckpt, data_cfg, "cpu")[2]


# ---------------------------------------------------------------- GFL

R = 16  # reg_max


def gfl_anchors(shapes):
    """GFL's anchors: one square of side 8 * stride per location."""
    return AnchorGenerator(anchor_scale=8, scales_per_octave=1, ratios=(1.0,))(shapes)


# ---------------------------------------------------------------- GHM-C


def near_threshold_pairs(
    batch: int = 16, num_classes: int = 80, size: tuple[int, int] = (800, 1333),
    iou: float = 0.5, seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Box pairs whose IoU is ``iou`` + eps, eps in +-1e-3, +-1e-4, +-1e-5, in every
    (image, class) group of a COCO-size batch: box A (w, h in 20..220 px, anywhere in the
    image, coordinates not whole) and A shifted right by ``d = w (1 - I) / (1 + I)``, so
    that IoU = (w - d) / (w + d) = I. Random scores. |eps| >= 1e-5 stays well above float32
    rounding of the IoU (about 1e-7), so per-group NMS keeps the same set in float32 and
    float64.

    Returns:
        boxes (P, 4) float32 x1y1x2y2, scores (P,), image (P,), labels (P,), groups in order.
    """
    g = torch.Generator().manual_seed(seed)
    eps = torch.tensor([-1e-3, -1e-4, -1e-5, 1e-5, 1e-4, 1e-3], dtype=torch.float64)
    n, groups = len(eps), batch * num_classes
    w = torch.rand(groups, n, generator=g, dtype=torch.float64) * 200 + 20  # (G, n)
    h = torch.rand(groups, n, generator=g, dtype=torch.float64) * 200 + 20
    x = torch.rand(groups, n, generator=g, dtype=torch.float64) * (size[1] - 2 * w)
    y = torch.rand(groups, n, generator=g, dtype=torch.float64) * (size[0] - h)
    d = w * (1 - (iou + eps)) / (1 + (iou + eps))
    a = torch.stack([x, y, x + w, y + h], -1)  # (G, n, 4)
    b = a + torch.stack([d, 0 * d, d, 0 * d], -1)
    boxes = torch.stack([a, b], 2).reshape(-1, 4).float()  # (G * 2n, 4)
    group = torch.arange(groups).repeat_interleave(2 * n)
    scores = torch.rand(len(boxes), generator=g)
    return boxes, scores, group // num_classes, group % num_classes


def per_group_nms(boxes, scores, image, labels, iou: float, dtype=torch.float64) -> set[int]:
    """Indices kept by ``torchvision.ops.nms`` run on each (image, class) group alone."""
    from torchvision.ops import nms

    group = image * (int(labels.max()) + 1) + labels
    kept = []
    for g in group.unique():
        m = (group == g).nonzero().squeeze(1)
        kept += m[nms(boxes[m].to(dtype), scores[m].to(dtype), iou)].tolist()
    return set(kept)


def ghm_example():
    # targets 0, so g = sigmoid(x); 4 bins [0, .25) [.25, .5) [.5, .75) [.75, 1]
    g = torch.tensor([0.1, 0.1, 0.1, 0.6, 0.9, 0.1])
    x = torch.log(g / (1 - g))
    valid = torch.tensor([True] * 5 + [False])
    return x, torch.zeros(6), valid


# ---------------------------------------------------------------- sweep records


def record(job, gamma, alpha, mAP=None, status="ok", error="", wall_s=10.0):
    """A job.json as retina.sweeps.job writes it; mAP None: no metrics."""
    return {
        "job": job,
        "overrides": ["experiment=neon_retinanet", f"loss.gamma={gamma}", f"loss.alpha={alpha}"],
        "status": status, "error": error, "wall_s": wall_s, "metric": "val/mAP",
        "direction": "maximize",
        "metrics": {} if mAP is None else {"val/mAP": mAP, "val/mAP_50": 2 * mAP, "epoch": 3},
    }


RECORDS = [
    record(0, 0, 0.25, 0.10),
    record(1, 0, 0.75, 0.30),
    record(2, 2, 0.25, status="failed", error="ValueError: loss diverged | nan", wall_s=1.5),
    record(3, 2, 0.75, 0.20),
]


# ---------------------------------------------------------------- real annotation files

# folders of the sdists that conftest.py's ``labelme`` and ``sahi`` fixtures unpack
LABELME_VOC = "examples/bbox_detection/data_dataset_voc"
LABELME_COCO = "examples/instance_segmentation/data_dataset_coco"
SAHI_DEMO = "demo/demo_data"


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


def add_label_line(text: str):
    """A damage for ``yolo_root``: ``text`` becomes line 2 of a label file."""

    def damage(root: Path) -> None:
        txt = root / "labels/train/2011_000006.txt"
        lines = txt.read_text().splitlines()
        txt.write_text("\n".join([lines[0], text, *lines[1:]]) + "\n")  # becomes line 2

    return damage


def coco_edit(root: Path, edit) -> Path:
    """``root/bad.json``: ``root/ann.json`` changed in place by ``edit(data)``."""
    data = json.loads((root / "ann.json").read_text())
    edit(data)
    (root / "bad.json").write_text(json.dumps(data))
    return root / "bad.json"


def truncate(image: Path) -> None:
    """Cut an image file to half its bytes: PIL still opens its header, decoding fails."""
    data = image.read_bytes()
    image.write_bytes(data[: len(data) // 2])


def evaluate(ds: CocoDetection, ids: list[int], dets: list[dict]) -> dict[str, float]:
    return coco_evaluate(load_coco(ds.ann_file), to_coco_results(ids, dets, ds.cat_ids), ids)[0]


# ---------------------------------------------------------------- detections from ground truth


def jittered_results(coco: COCO, seed: int = 0, wrong_class: float = 0.15,
                     false_per_image: int = 3) -> list[dict]:
    """COCO results made from the ground truth, so the numbers are not trivial: every box
    shifted and rescaled (~10 % of its size), some given a random category, with a random
    score, plus ``false_per_image`` random boxes per image on present categories."""
    rng = np.random.default_rng(seed)
    cats = sorted(coco.getCatIds())
    present = sorted({a["category_id"] for a in coco.dataset["annotations"]})
    out = []
    for ann in coco.dataset["annotations"]:
        x, y, w, h = ann["bbox"]
        dx, dy = rng.normal(0.0, 0.1, 2) * (w, h)
        sw, sh = np.exp(rng.normal(0.0, 0.15, 2))
        cat = int(rng.choice(cats)) if rng.uniform() < wrong_class else ann["category_id"]
        out.append({"image_id": ann["image_id"], "category_id": cat,
                    "bbox": [float(x + dx), float(y + dy), float(w * sw), float(h * sh)],
                    "score": float(rng.uniform(0.05, 1.0))})
    for image in coco.imgs.values():
        for _ in range(false_per_image):
            w, h = rng.uniform(0.05, 0.3, 2) * (image["width"], image["height"])
            x, y = rng.uniform(0, 1, 2) * (image["width"] - w, image["height"] - h)
            out.append({"image_id": image["id"], "category_id": int(rng.choice(present)),
                        "bbox": [float(x), float(y), float(w), float(h)],
                        "score": float(rng.uniform(0.0, 0.6))})
    return out


def per_category_stats(coco: COCO, results: list[dict], cat: int) -> list[float]:
    """pycocotools run for one category (``params.catIds=[cat]``): stats 0, 1, 2, 8."""
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(coco, coco.loadRes([dict(r) for r in results]), "bbox")
        ev.params.catIds = [cat]
        ev.evaluate(), ev.accumulate(), ev.summarize()
    return [float(ev.stats[i]) for i in (0, 1, 2, 8)]


# ---------------------------------------------------------------- hand-built detections


def one_image_coco(boxes: list[tuple[int, list[float]]], iscrowd=()) -> COCO:
    """One 200 x 200 image (id 1), categories 1 "a" and 2 "b", boxes (category, xywh)."""
    gt = COCO()
    gt.dataset = {
        "images": [{"id": 1, "width": 200, "height": 200, "file_name": "1.png"}],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
        "annotations": [{"id": i, "image_id": 1, "category_id": c, "bbox": b, "area": b[2] * b[3],
                         "iscrowd": int(i in iscrowd)}
                        for i, (c, b) in enumerate(boxes, 1)],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


# TIDE's error types, one of each (tests/analysis/test_errors.py)
A, B = 1, 2
GT = one_image_coco([
    (A, [0, 0, 20, 20]),     # g1: found by d1 (and duplicated by d4)
    (A, [50, 0, 20, 20]),    # g2: d2 puts class b on it
    (B, [0, 50, 20, 20]),    # g3: d3 has the class, IoU 0.3
    (B, [50, 50, 20, 20]),   # g4: nothing near it: missed
    (B, [100, 100, 20, 20]),  # g5: only d6, wrong class and IoU 0.3: missed too
    (A, [150, 0, 20, 20]),   # g6: found by d7
    (B, [0, 150, 20, 20]),   # g7: found by d8
])


def det(cat, bbox, score):
    return {"image_id": 1, "category_id": cat, "bbox": bbox, "score": score}


DETS = [
    det(A, [0, 0, 20, 20], 0.3),      # d1 true positive on g1
    det(B, [50, 0, 20, 20], 0.8),     # d2 classification: IoU 1 with g2 of class a
    det(B, [0, 50, 20, 6], 0.6),      # d3 localisation: inside g3, IoU 120 / 400 = 0.3
    det(A, [1, 0, 20, 20], 0.2),      # d4 duplicate: IoU 380 / 420 with g1, taken by d1
    det(A, [150, 150, 10, 10], 0.7),  # d5 background: touches no box
    det(A, [100, 100, 20, 6], 0.4),   # d6 both: IoU 0.3 with g5 of class b
    det(A, [150, 0, 20, 20], 0.1),    # d7 true positive on g6
    det(B, [0, 150, 20, 20], 0.05),   # d8 true positive on g7
]


# ---------------------------------------------------------------- notebooks

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


# ---------------------------------------------------------------- uploads (retina serve)


def png(width: int = 40, height: int = 30, mode: str = "RGB", seed: int = 0) -> bytes:
    """A PNG file of random pixels, converted to PIL ``mode``."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, format="PNG")
    return buffer.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` RGB pixels and holds one row: a
    decompression bomb's header without the bomb."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * (1 + 3 * 16))) + chunk(b"IEND", b""))
