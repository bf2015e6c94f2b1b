"""retina.infer.tta (test-time flip) and the full pass of retina.infer.sliced, with fake
predictors whose boxes are known, and the colour oracle of test_sliced.py (which boxes
exactly what it sees, so a flip finds the same objects)."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from retina.data.scene import PILScene, TensorScene
from retina.infer.sliced import overview_size, predict_scene
from retina.infer.tta import FlipTTA, unflip
from retina.ops.window_merge import merge_sets
from tests.infer.test_sliced import as_set, oracle, scene_with


class Meta:
    """What FlipTTA and the full pass read of a predictor's metadata."""

    size, min_size, max_size, graph_input_size = 100, None, None, None
    model = {"postprocess": {"nms_thresh": 0.5, "max_det": 100}}


class Fixed:
    """A predictor that boxes the same pixels (x1 y1 x2 y2 = 10 20 30 40) in every image it
    is given, and records the images' sizes."""

    meta = Meta()

    def __init__(self, spread: bool = False) -> None:
        self.seen: list[tuple] = []
        self.spread = spread

    def __call__(self, images):
        self.seen.append([tuple(im.shape) for im in images])
        out = [{"boxes": torch.tensor([[10.0, 20, 30, 40]]), "scores": torch.tensor([0.9]),
                "labels": torch.tensor([0])} for _ in images]
        if self.spread:  # left top right bottom
            for det in out:
                det["spread"] = torch.tensor([[1.0, 2, 3, 4]])
        return out


def test_unflip_maps_boxes_and_swaps_left_and_right_spread():
    det = {"boxes": torch.tensor([[10.0, 20, 30, 40]]), "spread": torch.tensor([[1.0, 2, 3, 4]]),
           "scores": torch.tensor([0.5])}
    out = unflip(det, 100)
    # x1' = 100 - 30 = 70, x2' = 100 - 10 = 90; y unchanged
    torch.testing.assert_close(out["boxes"], torch.tensor([[70.0, 20, 90, 40]]))
    torch.testing.assert_close(out["spread"], torch.tensor([[3.0, 2, 1, 4]]))
    back = unflip(out, 100)  # an inverse pair
    torch.testing.assert_close(back["boxes"], det["boxes"])
    torch.testing.assert_close(back["spread"], det["spread"])


def test_flip_runs_both_views_in_one_call_and_keeps_each_views_box():
    fixed = Fixed(spread=True)
    image = torch.zeros(3, 60, 100, dtype=torch.uint8)
    (det,) = FlipTTA(fixed)([image])
    assert fixed.seen == [[(3, 60, 100), (3, 60, 100)]]  # the image and its flip, one call
    # the flip's box 10..30 is 70..90 in the image: apart from the other, both kept
    assert sorted(det["boxes"].tolist()) == [[10.0, 20, 30, 40], [70.0, 20, 90, 40]]
    assert sorted(det["spread"].tolist()) == [[1.0, 2, 3, 4], [3.0, 2, 1, 4]]


def test_flip_of_a_symmetric_detector_changes_nothing():
    objects = [(3, 4, 20, 30), (40, 10, 90, 50), (70, 70, 99, 99)]
    image = scene_with(objects, 100, 100)
    plain = oracle([image])[0]
    flipped = FlipTTA(oracle_with_meta)([image])[0]
    assert as_set(flipped) == as_set(plain) == sorted((k, *o) for k, o in enumerate(objects, 1))


def oracle_with_meta(images):
    return oracle(images)


oracle_with_meta.meta = Meta()


def test_flip_slices_a_scene_like_the_plain_detector():
    objects = [(60, 20, 130, 60), (5, 70, 30, 95), (150, 10, 190, 90)]
    scene = TensorScene(scene_with(objects, 200, 100))
    plain = predict_scene(oracle, scene, 100, iou_thresh=0.5)
    flipped = predict_scene(FlipTTA(oracle_with_meta), scene, 100, iou_thresh=0.5)
    assert as_set(flipped) == as_set(plain) == sorted((k, *o) for k, o in enumerate(objects, 1))


def test_merge_sets_keeps_the_best_of_a_duplicate_and_fuses_on_request():
    a = {"boxes": torch.tensor([[10.0, 10, 20, 20], [50, 50, 60, 60]]),
         "scores": torch.tensor([0.9, 0.8]), "labels": torch.tensor([0, 0])}
    b = {"boxes": torch.tensor([[10.0, 10, 22, 20], [10, 10, 20, 20]]),
         "scores": torch.tensor([0.3, 0.7]), "labels": torch.tensor([0, 1])}
    out = merge_sets([a, b], 0.5)
    # [10 10 22 20] (IoU 100 / 120 with the 0.9 box, same class) goes; class 1 stays
    assert out["boxes"].tolist() == [[10.0, 10, 20, 20], [50, 50, 60, 60], [10, 10, 20, 20]]
    assert out["labels"].tolist() == [0, 0, 1]
    fused = merge_sets([a, b], 0.5, "fusion", max_det=2)
    # x2 = (0.9 * 20 + 0.3 * 22) / 1.2 = 20.5; two kept at most
    torch.testing.assert_close(fused["boxes"], torch.tensor([[10.0, 10, 20.5, 20], [50, 50, 60, 60]]))
    with pytest.raises(ValueError, match="merge='wbf'"):
        merge_sets([a], 0.5, "wbf")


def test_full_pass_boxes_come_back_in_scene_pixels():
    fixed = Fixed()
    scene = TensorScene(torch.zeros(3, 200, 400, dtype=torch.uint8))
    det = predict_scene(fixed, scene, 100, overlap=0.0, batch_size=8, full_pass=(100, 100))
    # 4 x 2 windows in one call, then the whole scene at 100 x 100
    assert fixed.seen == [[(3, 100, 100)] * 8, [(3, 100, 100)]]
    # the full pass's box 10 20 30 40 of the 100 x 100 overview: x * 4, y * 2
    assert [40.0, 40, 120, 80] in det["boxes"].tolist()
    # each window's box at its own 10 20 30 40 is apart from every other: all kept
    assert len(det["boxes"]) == 8 + 1


def test_full_pass_box_and_a_window_box_of_one_object_merge():
    class Both(Fixed):  # the windows box 10 20 30 40 too; the overview of a 200 x 200
        def __call__(self, images):  # scene at 100 x 100 boxes 5 10 15 20 (= 10 20 30 40)
            out = super().__call__(images)
            if images[0].shape[-1] == 100 and len(images) == 1 and self.seen[-2:-1]:
                out[0]["boxes"] = torch.tensor([[5.0, 10, 15, 20]])
                out[0]["scores"] = torch.tensor([0.95])
            return out

    both = Both()
    scene = TensorScene(torch.zeros(3, 200, 200, dtype=torch.uint8))
    det = predict_scene(both, scene, 200, batch_size=1, full_pass=(100, 100))
    assert det["boxes"].tolist() == [[10.0, 20, 30, 40]]
    torch.testing.assert_close(det["scores"], torch.tensor([0.95]))  # the full pass's


def test_overview_reads_the_whole_scene_small(tmp_path):
    image = torch.zeros(3, 300, 600, dtype=torch.uint8)
    image[:, :, 300:] = 200  # right half bright
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(tmp_path / "s.png")
    for scene in (TensorScene(image), PILScene(tmp_path / "s.png")):
        small = scene.overview(50, 100)
        assert small.shape == (3, 50, 100) and small.dtype == torch.uint8
        assert small[:, :, :45].max() == 0 and small[:, :, 55:].min() == 200


def test_overview_size_follows_the_eval_resize():
    class MinMax(Meta):
        size, min_size, max_size = None, 100, 150

    assert overview_size(Meta(), 4000, 3000) == (100, 100)  # a fixed size: the input
    # short side 3000 -> 100 would make the long side 133: under max_size
    assert overview_size(MinMax(), 4000, 3000) == (100, 133)
    # 1000 x 8000: the long side caps it: 150 / 8000 -> 19 x 150
    assert overview_size(MinMax(), 1000, 8000) == (150, 19)
