"""Uploaded bytes -> a uint8 RGB image, or a :class:`BadRequest` with a one-line reason.

Nothing here trusts the upload: the size is checked before the bytes are read whole
(``retina.infer.serving.request``), the pixel count from the header before the pixels are
decoded (a small file can declare a huge image: a decompression bomb), only the formats
of :data:`FORMATS` are opened (PIL's EPS plugin would run Ghostscript), and a file that ends
early fails instead of being padded with grey. Conversion to RGB is the one
``retina predict`` uses (``retina.data.coco.rgb_array``), so both see the same pixels.
"""

from __future__ import annotations

import io

import torch
from PIL import Image
from torch import Tensor

from retina.data.coco import rgb_array

# PIL formats a server opens (JPEG includes the multi-picture JPEGs of many cameras)
FORMATS = ("PNG", "JPEG", "TIFF", "BMP", "WEBP", "GIF")
MAX_BYTES = 50_000_000  # default upload limit
MAX_PIXELS = 50_000_000  # default image limit (about 7000 x 7000; 150 MB as uint8 RGB)


class BadRequest(Exception):
    """A request the server refuses: ``status`` (4xx) and a one-line ``reason``."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS) -> Tensor:
    """The upload as an image.

    Args:
        data: the file's bytes.
        max_pixels: refuse images with more pixels (width x height) than this.

    Returns:
        (3, H, W) uint8 RGB (the first frame of a multi-frame file).

    Raises:
        BadRequest: 400 for an empty, unreadable or truncated file, 413 for too many pixels.
    """
    if not data:
        raise BadRequest(400, "empty upload: send the bytes of an image file")
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as im:
            width, height = im.size
            if width * height > max_pixels:
                raise BadRequest(413, f"image of {width} x {height} = {width * height} pixels "
                                      f"is over max_pixels={max_pixels}")
            rgb = rgb_array(im)  # (H, W, 3): decodes here, a truncated file raises
    except BadRequest:
        raise
    except Image.DecompressionBombError as err:  # over PIL's own limit (2 x MAX_IMAGE_PIXELS)
        raise BadRequest(413, f"image over PIL's pixel limit: {err}") from None
    except Image.UnidentifiedImageError:
        raise BadRequest(400, f"not an image in a served format ({', '.join(FORMATS)})") from None
    # PIL's plugins raise many kinds (OSError for a truncated file, SyntaxError, ValueError,
    # struct.error, EOFError, ...): any of them is a bad upload, told in one line
    except Exception as err:  # noqa: BLE001
        reason = " ".join(str(err).split()) or type(err).__name__
        raise BadRequest(400, f"unreadable image: {reason}") from None
    return torch.from_numpy(rgb).permute(2, 0, 1).contiguous()  # (3, H, W)
