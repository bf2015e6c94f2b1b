"""retina.infer.serving.decode: the pixels retina predict reads, and every bad upload refused
in one line with its status."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from retina.data.coco import read_rgb
from retina.infer.serving.decode import BadRequest, decode_image
from tests.helpers import png, png_header


def refused(data: bytes, **kwargs) -> BadRequest:
    with pytest.raises(BadRequest) as info:
        decode_image(data, **kwargs)
    assert "\n" not in info.value.reason
    return info.value


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P", "I;16"])
def test_the_pixels_are_those_retina_predict_reads(mode, tmp_path):
    data = png(mode=mode)
    (tmp_path / "x.png").write_bytes(data)
    assert decode_image(data).equal(read_rgb(tmp_path / "x.png"))


def test_a_jpeg_and_the_first_frame_of_a_tiff():
    rgb = np.zeros((8, 12, 3), np.uint8)
    for fmt in ("JPEG", "TIFF"):
        buffer = io.BytesIO()
        Image.fromarray(rgb).save(buffer, format=fmt)
        assert tuple(decode_image(buffer.getvalue()).shape) == (3, 8, 12)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # PIL's, over 89 MP
@pytest.mark.parametrize("data, status, reason", [
    (b"", 400, "empty upload"),
    (b"name,score\ntree,0.9\n", 400, "not an image in a served format (PNG, JPEG"),
    (png()[:200], 400, "unreadable image: image file is truncated"),
    (png_header(12000, 12000), 413, "image of 12000 x 12000 = 144000000 pixels is over "
                                    "max_pixels=50000000"),
    (png_header(100_000, 100_000), 413, "image over PIL's pixel limit"),
    # PIL would run Ghostscript on it: not a served format
    (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", 400, "not an image in a served"),
], ids=["empty", "csv", "truncated", "over_max_pixels", "over_pil_limit", "eps"])
def test_bad_uploads_are_refused_in_one_line(data, status, reason):
    bad = refused(data)
    assert bad.status == status and bad.reason.startswith(reason), bad.reason


def test_the_pixel_limit_is_an_option():
    assert refused(png(40, 30), max_pixels=1000).reason == (
        "image of 40 x 30 = 1200 pixels is over max_pixels=1000")
    assert decode_image(png(40, 30), max_pixels=1200).shape == (3, 30, 40)
