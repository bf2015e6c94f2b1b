"""retina.data.transforms: resizing, flips, quarter turns and scale jitter move the boxes."""

from __future__ import annotations

import pytest
import torch
from torchvision import tv_tensors

from retina.data import eval_transforms, train_transforms


def _box_sample(boxes: list[list[float]], h: int = 50, w: int = 200):
    image = tv_tensors.Image(torch.randint(0, 256, (3, h, w), dtype=torch.uint8))
    target = {
        "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(h, w)),
        "labels": torch.arange(len(boxes)),
        "image_id": 3,
        "orig_size": (h, w),
    }
    return image, target


def _boxes(target: dict) -> list[list[float]]:
    return target["boxes"].as_subclass(torch.Tensor).tolist()


def test_fixed_size_resize_scales_boxes():
    # 200x50 (WxH) -> 100x100: x * 100/200 = x/2, y * 100/50 = 2y.
    # [20, 10, 60, 30] -> [10, 20, 30, 60]; [0, 0, 1, 0.4] -> [0, 0, 0.5, 0.8] (< 1 px: removed)
    image, target = eval_transforms(size=100)(*_box_sample([[20, 10, 60, 30], [0, 0, 1, 0.4]]))
    assert image.shape == (3, 100, 100) and image.dtype == torch.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert _boxes(target) == [[10.0, 20.0, 30.0, 60.0]] and target["labels"].tolist() == [0]
    assert target["image_id"] == 3 and target["orig_size"] == (50, 200)


def test_min_max_size_resize():
    # short side 50 -> 100 would make the long side 400 > 300: capped, factor 300/200 = 1.5.
    image, target = eval_transforms(min_size=100, max_size=300)(*_box_sample([[20, 10, 60, 30]]))
    assert image.shape == (3, 75, 300)
    assert _boxes(target) == [[30.0, 15.0, 90.0, 45.0]]
    image, _ = eval_transforms()(*_box_sample([[20, 10, 60, 30]]))
    assert image.shape == (3, 50, 200)


def test_flips_move_boxes():
    sample = _box_sample([[20, 10, 60, 30]])  # W = 200, H = 50
    _, t = train_transforms(hflip=1.0)(*sample)
    assert _boxes(t) == [[140.0, 10.0, 180.0, 30.0]]  # x -> 200 - x
    _, t = train_transforms(hflip=0.0, vflip=1.0)(*sample)
    assert _boxes(t) == [[20.0, 20.0, 60.0, 40.0]]  # y -> 50 - y
    image, t = train_transforms(hflip=1.0, vflip=1.0, photometric=True)(*sample)
    assert _boxes(t) == [[140.0, 20.0, 180.0, 40.0]] and image.dtype == torch.float32
    assert t["image_id"] == 3 and t["orig_size"] == (50, 200)


def test_quarter_turn_moves_boxes_and_swaps_sides():
    image, target = _box_sample([[20, 10, 60, 30]])  # W = 200, H = 50
    turned, t = train_transforms(hflip=0.0, rot90=1.0)(image, target)
    assert turned.shape == (3, 200, 50)  # counter-clockwise: (x, y) -> (y, W - x)
    assert _boxes(t) == [[10.0, 140.0, 30.0, 180.0]]
    torch.testing.assert_close(turned, torch.rot90(image, 1, dims=(1, 2)).float() / 255)


def test_scale_jitter_range():
    tf = train_transforms(size=100, scale_jitter=(0.5, 1.5))
    for _ in range(5):
        image, _ = tf(*_box_sample([[20, 10, 60, 30]]))
        assert image.shape[-1] == image.shape[-2] and 50 <= image.shape[-1] <= 150
    with pytest.raises(ValueError, match="size or min_size"):
        train_transforms(scale_jitter=(0.5, 1.5))


@pytest.mark.parametrize("kwargs, message", [
    ({"size": 100, "min_size": 80}, "either size or min_size/max_size"),
    ({"size": 100, "scale_jitter": (1.2, 0.8)}, "0 < low <= high, got"),
    ({"scale_jitter": (0.8, 1.2)}, "scale_jitter needs size or min_size"),
])
def test_bad_resize_options_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        train_transforms(**kwargs)


def test_rcnn_resize_is_torchvisions_detection_resize():
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    # 300 x 451 (H x W): s = min(320 / 300, 400 / 451) = 0.88692, sides floor(266.08) = 266
    # and floor(400.0) = 400 (the antialiased resize gives that size too, other pixels)
    image, target = _box_sample([[20.0, 10.0, 60.0, 30.0]], h=300, w=451)
    out, out_target = eval_transforms(min_size=320, max_size=400, resize="rcnn")(image, target)
    assert out.shape == (3, 266, 400) and out.dtype == torch.float32
    tv = GeneralizedRCNNTransform(320, 400, [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]).eval()
    boxes = torch.tensor([[20.0, 10, 60, 30]])
    theirs, tv_targets = tv([image.float() / 255], [{"boxes": boxes, "labels": torch.ones(1)}])
    assert theirs.image_sizes == [(266, 400)]
    torch.testing.assert_close(out, theirs.tensors[0, :, :266, :400], rtol=0, atol=1e-6)
    torch.testing.assert_close(out_target["boxes"].as_subclass(torch.Tensor), tv_targets[0]["boxes"])
    antialiased, _ = eval_transforms(min_size=320, max_size=400)(image, target)
    assert antialiased.shape == out.shape and (antialiased - out).abs().max() > 0.01
    with pytest.raises(ValueError, match="min_size and max_size"):
        eval_transforms(size=320, resize="rcnn")
    with pytest.raises(ValueError, match="resize must be one of"):
        eval_transforms(min_size=320, max_size=400, resize="cv2")


def test_the_network_input_size_of_a_typical_image():
    from retina.data.transforms import network_input_size

    assert network_input_size(448, size_divisible=32) == (448, 448)
    assert network_input_size(None, 800, 1333, 32) == (800, 1344)  # 1333 padded to 42 x 32
    assert network_input_size(None, 600, None, 128) == (640, 640)
    assert network_input_size() is None  # each image at its own size
