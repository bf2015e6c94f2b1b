"""Batch ``(image, target)`` pairs, or bare images for inference, into padded tensors."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

# Padded batch sides are multiples of this by default: the stride of P7, the coarsest level,
# so every level's map covers the input exactly. The one default (the datamodule, export
# metadata and the predictor read it); data configs may trade it for less padding (NEON: 32).
SIZE_DIVISIBLE = 128


def pad_images(images: list[Tensor], size_divisible: int = SIZE_DIVISIBLE
               ) -> tuple[Tensor, Tensor]:
    """[(3, h_i, w_i)] float (uint8 is converted to float in [0, 1]) -> the batch (B, 3, H, W)
    float32, zero-padded at the bottom/right to the largest sides rounded up to multiples of
    ``size_divisible``, and ``image_sizes`` (B, 2) int64 (h_i, w_i)."""
    images = [F.to_dtype(im, torch.float32, scale=True).as_subclass(Tensor) for im in images]
    image_sizes = torch.tensor([im.shape[-2:] for im in images], dtype=torch.int64)  # (B, 2)
    stride = size_divisible
    padded_hw = (image_sizes.amax(dim=0) + stride - 1) // stride * stride  # (2,) rounded up
    padded = images[0].new_zeros((len(images), images[0].shape[0], *padded_hw.tolist()))
    for i, image in enumerate(images):
        padded[i, :, : image.shape[-2], : image.shape[-1]] = image
    return padded, image_sizes


def preprocess(images: list[Tensor], transform: Callable[[Tensor], Tensor],
               size_divisible: int = SIZE_DIVISIBLE) -> dict[str, Tensor]:
    """Images for inference as the evaluation loader batches them: each resized by
    ``transform`` (``retina.data.transforms.image_transforms``), then padded as :func:`collate`.

    Args:
        images: uint8 RGB (3, H_i, W_i) each.

    Returns:
        ``images`` (B, 3, H, W) float32 in [0, 1], zero-padded; ``image_sizes`` (B, 2) after
        the resize; ``orig_sizes`` (B, 2) of the given images.
    """
    orig_sizes = torch.tensor([im.shape[-2:] for im in images], dtype=torch.int64)  # (B, 2)
    resized = [transform(tv_tensors.Image(im)).as_subclass(Tensor) for im in images]
    padded, image_sizes = pad_images(resized, size_divisible)
    return {"images": padded, "image_sizes": image_sizes, "orig_sizes": orig_sizes}


def collate(
    batch: list[tuple[Tensor, dict[str, Any]]], size_divisible: int = SIZE_DIVISIBLE
) -> dict[str, Tensor]:
    """Pad images and targets of a batch to common shapes.

    Images are zero-padded at the bottom/right, so box coordinates are unchanged.
    Detections are mapped back to the original image by scaling per axis with
    ``orig_sizes / image_sizes``.

    Args:
        batch: ``(image, target)`` pairs: image (3, h, w) float (uint8 is converted to
            float in [0, 1]); target with ``boxes`` (n, 4) xyxy, ``labels`` (n,),
            ``image_id`` int and ``orig_size`` (H, W).
        size_divisible: The padded height and width are multiples of this (the largest
            stride of the network).

    Returns:
        A dict of plain tensors:
            ``images`` (B, 3, H, W) float32, H and W the batch maxima rounded up to a
            multiple of ``size_divisible``;
            ``boxes`` (B, M, 4) float32 xyxy in the unpadded image pixels, M the largest
            box count (may be 0), padding rows zero;
            ``labels`` (B, M) int64, padding -1;
            ``image_ids`` (B,) int64;
            ``orig_sizes`` (B, 2) int64 (H, W) of the image file;
            ``image_sizes`` (B, 2) int64 (h, w) after transforms, before padding.
    """
    padded, image_sizes = pad_images([im for im, _ in batch], size_divisible)
    targets = [target for _, target in batch]
    num_boxes = [len(t["labels"]) for t in targets]
    b, m = len(batch), max(num_boxes, default=0)
    boxes = torch.zeros((b, m, 4), dtype=torch.float32)  # (B, M, 4)
    labels = torch.full((b, m), -1, dtype=torch.int64)  # (B, M)
    for i, (target, n) in enumerate(zip(targets, num_boxes)):
        boxes[i, :n] = target["boxes"].as_subclass(Tensor).reshape(n, 4)
        labels[i, :n] = target["labels"]

    return {
        "images": padded,
        "boxes": boxes,
        "labels": labels,
        "image_ids": torch.tensor([int(t["image_id"]) for t in targets], dtype=torch.int64),
        "orig_sizes": torch.tensor([tuple(t["orig_size"]) for t in targets], dtype=torch.int64),
        "image_sizes": image_sizes,
    }
