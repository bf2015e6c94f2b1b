"""retina.data.coco: the COCO dataset (labels, boxes, input checks) and read_rgb."""

from __future__ import annotations

import json
import logging
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from retina.data import CocoDetection, read_rgb
from retina.data.validate import AnnotationError
from tests.helpers import SAHI_DEMO, coco_edit

# ---------------------------------------------------------------- synthetic COCO files


def test_dataset_labels_boxes_and_conversion(coco_dir: Path, caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.WARNING, logger="retina.data.coco"):
        ds = CocoDetection(coco_dir / "ann.json", coco_dir / "images")
    assert ds.cat_ids == [3, 7] and ds.class_names == ["cat", "dog"] and ds.num_classes == 2
    assert ds.image_ids == [5, 7, 10] and len(ds) == 3
    # One line: ann 4 (w=0) dropped, ann 2 (x 25..35 in a 30-wide image) clipped.
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1
    assert "dropped 1 degenerate boxes, clipped 1 (first: b.png, a.png)" in messages[0]

    image, target = ds[2]  # a.png, RGB
    assert isinstance(image, tv_tensors.Image) and image.dtype == torch.uint8
    assert image.shape == (3, 20, 30)
    assert isinstance(target["boxes"], tv_tensors.BoundingBoxes)
    assert target["boxes"].canvas_size == (20, 30) and target["boxes"].dtype == torch.float32
    # xywh -> xyxy; the crowd box is excluded; [25, 10, 10, 5] -> [25, 10, 35->30, 15].
    torch.testing.assert_close(
        target["boxes"].as_subclass(torch.Tensor),
        torch.tensor([[2.0, 3.0, 12.0, 8.0], [25.0, 10.0, 30.0, 15.0]]),
    )
    assert target["labels"].tolist() == [1, 0] and target["labels"].dtype == torch.int64
    assert target["image_id"] == 10 and target["orig_size"] == (20, 30)

    gray, target = ds[0]  # b.png, grayscale -> 3 equal channels
    assert gray.shape == (3, 16, 16) and gray.dtype == torch.uint8
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[0], gray[2])
    assert target["labels"].tolist() == [0]  # degenerate box dropped
    torch.testing.assert_close(
        target["boxes"].as_subclass(torch.Tensor), torch.tensor([[1.0, 1.0, 5.0, 5.0]])
    )

    rgba, target = ds[1]  # c.png, RGBA and no boxes: kept, empty target
    assert rgba.shape == (3, 10, 12) and rgba.dtype == torch.uint8
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)


def test_read_rgb_16bit_gray(tmp_path: Path):
    gray16 = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)  # 257 * v -> v in 8 bits
    Image.fromarray(gray16).save(tmp_path / "g16.png")
    image = read_rgb(tmp_path / "g16.png")
    assert image.dtype == torch.uint8 and image.tolist() == [[[0, 100, 255]]] * 3


def test_malformed_json_names_file(tmp_path: Path):
    bad = tmp_path / "broken.json"
    bad.write_text('{"images": [],\n "categories": [}')
    with pytest.raises(ValueError, match=r"broken\.json.*line 2"):
        CocoDetection(bad, tmp_path)
    with pytest.raises(FileNotFoundError, match="nothere.json"):
        CocoDetection(tmp_path / "nothere.json", tmp_path)


def test_unknown_category_names_annotation(coco_dir: Path):
    data = json.loads((coco_dir / "ann.json").read_text())
    data["annotations"].append(
        {"id": 99, "image_id": 5, "category_id": 42, "bbox": [1, 1, 2, 2], "iscrowd": 0}
    )
    (coco_dir / "bad.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"bad\.json: annotation id 99 has category_id 42"):
        CocoDetection(coco_dir / "bad.json", coco_dir / "images")


def test_missing_image_names_path(coco_dir: Path):
    ds = CocoDetection(coco_dir / "ann.json", coco_dir / "images")
    (coco_dir / "images" / "c.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"images/c\.png \(image id 7\)"):
        ds[1]
    with pytest.raises(FileNotFoundError, match=r"1 of 3 images .* first: .*images/c\.png"):
        CocoDetection(coco_dir / "ann.json", coco_dir / "images")


# ---------------------------------------------------------------- real fixtures (sahi)


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

    bad = coco_edit(sahi_coco, unknown_category)
    with pytest.raises(AnnotationError, match=r"bad\.json: annotation id 6 has category_id 9"):
        CocoDetection(bad, sahi_coco)
    ds = CocoDetection(bad, sahi_coco, skip_bad=True)
    assert ds.image_ids == [1] and ds.report.skipped == 2  # image 2 (bad box) and image 3

    def no_width(data):
        del data["images"][1]["width"]
        data["annotations"][0]["bbox"] = [1, 2, "3", 4]

    float_width = coco_edit(sahi_coco, lambda data: data["images"][0].update(width=1024.0))
    ds = CocoDetection(float_width, sahi_coco, skip_bad=True)  # a whole float is a size
    assert ds.image_ids == [1, 2] and ds[0][1]["orig_size"] == (682, 1024)

    bad = coco_edit(sahi_coco, no_width)
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
