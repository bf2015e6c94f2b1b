"""Transform builders for detection (``torchvision.transforms.v2``).

Each builder returns a ``v2.Compose`` that maps ``(image, target)`` to ``(image, target)``:
the image a ``tv_tensors.Image`` (3, H, W) uint8 in, float32 in [0, 1] out (no mean/std
normalisation: the model does it); ``target["boxes"]`` / ``target["labels"]`` follow the
geometry, boxes are clamped to the image and those smaller than 1 px removed with their
labels. Other target entries (``image_id``, ``orig_size``) pass through untouched.

Resizing, chosen by the arguments:
    - ``size``: fixed ``size x size`` square (aspect ratio not kept).
    - ``min_size`` / ``max_size``: short side to ``min_size``, long side capped at
      ``max_size`` (``max_size`` alone: long side to ``max_size``).
    - none of them: keep the image size.

and by ``resize``: ``"antialias"`` resizes the uint8 image (torchvision's v2 ``Resize``,
antialiased, 8-bit result); ``"rcnn"`` is torchvision's detection-model resize
(:class:`RCNNResize`, min_size / max_size only).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

RESIZES = ("antialias", "rcnn")


class RCNNResize:
    """torchvision's ``GeneralizedRCNNTransform`` resize at evaluation: the image in float,
    scale s = min(min_size / short side, max_size / long side), output sides floor(side * s)
    (``interpolate``'s ``recompute_scale_factor``), bilinear without antialiasing. Boxes
    follow. A callable ``(image, target) -> (image, target)`` for ``v2.Compose``.

    The model normalises after this resize, torchvision before it: bilinear weights sum
    to 1, so the two orders agree up to float rounding.
    """

    def __init__(self, min_size: int, max_size: int) -> None:
        self.min_size = min_size
        self.max_size = max_size

    def output_size(self, height: int, width: int) -> list[int]:
        """(h, w) after the resize of a ``height`` x ``width`` image."""
        scale = min(self.min_size / min(height, width), self.max_size / max(height, width))
        return [math.floor(height * scale), math.floor(width * scale)]

    def __call__(self, image: Tensor, target: dict | None = None) -> tuple[Tensor, dict] | Tensor:
        image = F.to_dtype(image, torch.float32, scale=True)
        size = self.output_size(*image.shape[-2:])
        resize = v2.Resize(size, antialias=False)
        return resize(image) if target is None else resize(image, target)


def _resize(
    size: int | None, min_size: int | None, max_size: int | None, resize: str = "antialias"
) -> list:
    """The resize step for the given options (empty list to keep the size)."""
    if resize not in RESIZES:
        raise ValueError(f"resize must be one of {', '.join(RESIZES)}, got {resize!r}")
    if resize == "rcnn":
        if size is not None or min_size is None or max_size is None:
            raise ValueError("resize=rcnn takes min_size and max_size (and no size)")
        return [RCNNResize(min_size, max_size)]
    if size is not None:
        if min_size is not None or max_size is not None:
            raise ValueError(f"give either size or min_size/max_size, not both (size {size}, "
                             f"min_size/max_size {min_size}/{max_size}; a square input: "
                             f"data.size={size} data.min_size=null data.max_size=null)")
        return [v2.Resize((size, size))]
    if min_size is not None or max_size is not None:
        return [v2.Resize(min_size, max_size=max_size)]
    return []


def _scale_jitter(
    scale: tuple[float, float], size: int | None, min_size: int | None, max_size: int | None
) -> v2.Transform:
    """Random multi-scale resize applied after the base resize, factor in ``scale``."""
    lo, hi = scale
    if not 0 < lo <= hi:
        raise ValueError(f"scale_jitter must be (low, high) with 0 < low <= high, got {scale}")
    if size is not None:  # square of side round(size * s), s ~ U(lo, hi)
        return v2.ScaleJitter((size, size), scale_range=(lo, hi))
    if min_size is not None:  # short side drawn from a few sizes in [lo, hi] * min_size
        sides = sorted({round(min_size * float(f)) for f in torch.linspace(lo, hi, 5)})
        cap = round(max_size * hi) if max_size is not None else None
        return v2.RandomShortestSize(sides, max_size=cap)
    raise ValueError("scale_jitter needs size or min_size")


def _finish() -> list[v2.Transform]:
    """Clamp boxes, drop degenerate ones with their labels, convert the image to float."""
    return [
        v2.ClampBoundingBoxes(),
        v2.SanitizeBoundingBoxes(),
        v2.ToDtype(torch.float32, scale=True),
    ]


def train_transforms(
    size: int | None = None,
    min_size: int | None = None,
    max_size: int | None = None,
    hflip: float = 0.5,
    vflip: float = 0.0,
    photometric: bool = False,
    scale_jitter: tuple[float, float] | None = None,
    rot90: float = 0.0,
    resize: str = "antialias",
) -> v2.Compose:
    """Training pipeline: resize, optional scale jitter, flips and quarter turns, optional
    colour jitter.

    Args:
        size: Fixed square side in pixels.
        min_size: Short side in pixels.
        max_size: Cap of the long side in pixels.
        hflip: Probability of a horizontal flip.
        vflip: Probability of a vertical flip (aerial images have no "up").
        photometric: Add ``ColorJitter(0.2, 0.2, 0.2, 0.02)``.
        scale_jitter: ``(low, high)`` factor range of a random resize relative to ``size``
            or ``min_size`` (one of them is required).
        rot90: Probability of a quarter turn (counter-clockwise; with both flips at 0.5,
            all eight orientations of the image are equally likely).
        resize: ``"antialias"`` or ``"rcnn"`` (see the module docstring).

    Returns:
        The composed transform.
    """
    ops = _resize(size, min_size, max_size, resize)
    if scale_jitter is not None:
        ops.append(_scale_jitter(scale_jitter, size, min_size, max_size))
    if hflip > 0:
        ops.append(v2.RandomHorizontalFlip(hflip))
    if vflip > 0:
        ops.append(v2.RandomVerticalFlip(vflip))
    if rot90 > 0:  # expand: the turned image is W x H, nothing cut
        ops.append(v2.RandomApply([v2.RandomRotation((90, 90), expand=True)], p=rot90))
    if photometric:
        ops.append(v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02))
    return v2.Compose(ops + _finish())


def eval_transforms(
    size: int | None = None, min_size: int | None = None, max_size: int | None = None,
    resize: str = "antialias",
) -> v2.Compose:
    """Evaluation pipeline: deterministic resize and conversion to float.

    Args:
        size: Fixed square side in pixels.
        min_size: Short side in pixels.
        max_size: Cap of the long side in pixels.
        resize: ``"antialias"`` or ``"rcnn"`` (see the module docstring).

    Returns:
        The composed transform.
    """
    return v2.Compose(_resize(size, min_size, max_size, resize) + _finish())


def resized_size(
    height: int, width: int, size: int | None = None, min_size: int | None = None,
    max_size: int | None = None, resize: str = "antialias",
) -> tuple[int, int]:
    """(h, w) of a ``height`` x ``width`` image after the resize of :func:`eval_transforms`
    (the same transform run on a box that covers the image: no pixels)."""
    ops = _resize(size, min_size, max_size, resize)
    if not ops:
        return height, width
    if isinstance(ops[0], RCNNResize):
        h, w = ops[0].output_size(height, width)
        return h, w
    whole = tv_tensors.BoundingBoxes([[0, 0, width, height]], format="XYXY",
                                     canvas_size=(height, width))
    return tuple(ops[0](whole).canvas_size)


def network_input_size(
    size: int | None = None, min_size: int | None = None, max_size: int | None = None,
    size_divisible: int = 1,
) -> tuple[int, int] | None:
    """(H, W) of the padded network input of a typical training image: ``size`` x ``size``, or
    a landscape image at short side ``min_size`` and long side ``max_size`` (``min_size``
    without one), rounded up to multiples of ``size_divisible``; None when the resize keeps
    each image's size (no typical input)."""
    if size is not None:
        hw = (size, size)
    elif min_size is not None:
        hw = (min_size, max_size or min_size)
    elif max_size is not None:
        hw = (max_size, max_size)
    else:
        return None
    return tuple(-(-side // size_divisible) * size_divisible for side in hw)


def image_transforms(
    size: int | None = None, min_size: int | None = None, max_size: int | None = None,
    resize: str = "antialias",
) -> v2.Compose:
    """:func:`eval_transforms` for an image without a target (inference): the same resize and
    conversion, so the same pixels. ``uint8 (3, H, W) -> float32 (3, h, w)`` in [0, 1]."""
    return v2.Compose(_resize(size, min_size, max_size, resize)
                      + [v2.ToDtype(torch.float32, scale=True)])
