"""retina.data.collate: padding images and targets into a batch."""

from __future__ import annotations

import torch
from torchvision import tv_tensors

from retina.data import collate


def _sample(h: int, w: int, boxes: list[list[float]], labels: list[int], image_id: int):
    target = {
        "boxes": tv_tensors.BoundingBoxes(
            torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            format="XYXY",
            canvas_size=(h, w),
        ),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "image_id": image_id,
        "orig_size": (2 * h, 2 * w),
    }
    return tv_tensors.Image(torch.rand(3, h, w)), target


def test_collate_pads_images_and_targets():
    a = _sample(100, 150, [[1, 2, 3, 4], [5, 6, 7, 8]], [2, 0], image_id=11)
    b = _sample(130, 60, [], [], image_id=12)  # no boxes
    out = collate([a, b], size_divisible=128)
    # max H = 130 -> 256, max W = 150 -> 256
    assert out["images"].shape == (2, 3, 256, 256) and out["images"].dtype == torch.float32
    assert type(out["images"]) is torch.Tensor
    assert torch.equal(out["images"][0, :, :100, :150], a[0].as_subclass(torch.Tensor))
    assert out["images"][0, :, 100:].abs().sum() == 0 and out["images"][1, :, :, 60:].sum() == 0
    assert out["boxes"].shape == (2, 2, 4) and out["boxes"].dtype == torch.float32
    assert out["boxes"][0].tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert out["boxes"][1].abs().sum() == 0
    assert out["labels"].tolist() == [[2, 0], [-1, -1]]
    assert out["image_ids"].tolist() == [11, 12]
    assert out["image_sizes"].tolist() == [[100, 150], [130, 60]]
    assert out["orig_sizes"].tolist() == [[200, 300], [260, 120]]
    assert out["orig_sizes"].dtype == torch.int64 and out["image_sizes"].dtype == torch.int64

    empty = collate([b, b], size_divisible=32)  # 130 -> 160, 60 -> 64; no boxes at all
    assert empty["images"].shape == (2, 3, 160, 64)
    assert empty["boxes"].shape == (2, 0, 4) and empty["labels"].shape == (2, 0)
