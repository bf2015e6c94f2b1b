"""retina.infer.sliced and retina.ops.window_merge with an oracle detector: each object is a
rectangle of its own colour, and the "detector" boxes exactly the pixels of each colour it
sees in a window, so a window cuts an object exactly where its border does. The merged
scene must then hold each object once and whole. (Runs on trained models, every export
format and real scenes are in e2e/test_sliced.py.)"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from retina.data.scene import TensorScene
from retina.infer.sliced import predict_scene
from retina.ops.window_merge import cut_boxes, merge_windows, overlapping_pairs


def oracle(images: list[Tensor]) -> list[dict[str, Tensor]]:
    """Per window: the box of each colour id (channel 0, 1..255) it sees; label = id % 2,
    score from the id; ``calls`` counts the batches."""
    oracle.calls += 1
    out = []
    for im in images:
        ids = im[0].unique()
        ids = ids[ids > 0]
        boxes = []
        for i in ids.tolist():
            ys, xs = (im[0] == i).nonzero(as_tuple=True)
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        out.append({"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                    "scores": 0.5 + ids.float() / 1000, "labels": ids.long() % 2,
                    "ids": ids.long()})
    return out


oracle.calls = 0


def scene_with(objects: list[tuple[int, int, int, int]], w: int, h: int) -> Tensor:
    """(3, h, w) uint8, object k (1-based) painted with id k in channel 0."""
    image = torch.zeros(3, h, w, dtype=torch.uint8)
    for k, (x1, y1, x2, y2) in enumerate(objects, start=1):
        image[0, y1:y2, x1:x2] = k
    return image


def run(objects, w, h, tile=100, overlap=0.25, **kw) -> dict[str, Tensor]:
    return predict_scene(oracle, TensorScene(scene_with(objects, w, h)), tile, overlap,
                         iou_thresh=0.5, **kw)


def as_set(det: dict[str, Tensor]) -> list[tuple]:
    return sorted((int(i), *b) for i, b in zip(det["ids"], det["boxes"].round().int().tolist()))


# windows of a 200 x 100 scene at tile 100, overlap 0.25 (step 75): x 0, 75, 100 (shifted in)
@pytest.mark.parametrize("obj, why", [
    ((60, 20, 130, 60), "wider than the overlap: cut by all three windows, merged into the hull"),
    ((80, 20, 95, 60), "inside the overlap of windows 0 and 1: found whole twice, NMS keeps one"),
    ((90, 20, 120, 60), "cut by windows 0 and 2, whole in window 1: the cut parts are dropped"),
    ((5, 5, 195, 95), "larger than a window"),
    ((98, 30, 104, 40), "on the seam, 6 px"),
])
def test_one_object_across_seams_is_found_once_and_whole(obj, why):
    det = run([obj], 200, 100)
    assert as_set(det) == [(1, *obj)], why


def test_scene_smaller_than_a_tile_is_padded_not_resized():
    seen = []

    def record(images):
        seen.extend(tuple(im.shape) for im in images)
        return oracle(images)

    det = predict_scene(record, TensorScene(scene_with([(3, 4, 20, 30)], 50, 40)), 100)
    assert seen == [(3, 100, 100)] and as_set(det) == [(1, 3, 4, 20, 30)]


@pytest.mark.parametrize("overlap", [0.25, 0.0])
def test_random_scenes_give_every_object_once_and_whole(overlap):
    # rectangles 4..150 px (some wider than the 64-px overlap) with gaps of >= 2 px, on a
    # 700 x 500 scene cut into 256-px windows (step 192: x 0 192 384 444, y 0 192 244); at
    # overlap 0 the windows only touch, but for the last row and column
    gen = torch.Generator().manual_seed(0)
    for _ in range(4):
        objects, taken = [], torch.zeros(500, 700, dtype=torch.bool)
        while len(objects) < 40:
            w, h = (torch.randint(4, 150, (2,), generator=gen) if torch.rand(1, generator=gen) < 0.3
                    else torch.randint(4, 40, (2,), generator=gen)).tolist()
            x, y = torch.randint(0, 700 - w, (1,), generator=gen).item(), \
                torch.randint(0, 500 - h, (1,), generator=gen).item()
            if not taken[max(0, y - 2):y + h + 2, max(0, x - 2):x + w + 2].any():
                taken[y:y + h, x:x + w] = True
                objects.append((x, y, x + w, y + h))
        calls = oracle.calls
        det = run(objects, 700, 500, tile=256, overlap=overlap, batch_size=3)
        assert as_set(det) == sorted((k, *o) for k, o in enumerate(objects, start=1))
        # 4 x 3 windows, or at overlap 0 x 0 256 444, y 0 244: 3 x 2; 3 per call
        assert oracle.calls - calls == (4 if overlap else 2)
        assert det["scores"].diff().le(0).all()  # sorted by score


def test_adjacent_objects_cut_by_one_seam_stay_apart():
    # two objects stacked along the seam x = 100, 1 px apart, both wider than the overlap
    objects = [(60, 10, 140, 40), (60, 41, 140, 90)]
    assert as_set(run(objects, 200, 100)) == [(1, *objects[0]), (2, *objects[1])]


def test_fusion_averages_duplicates_by_score():
    boxes = torch.tensor([[10.0, 10, 20, 20], [10, 10, 22, 20], [50, 50, 60, 60]])
    dets = {"boxes": boxes, "scores": torch.tensor([0.9, 0.3, 0.8]),
            "labels": torch.tensor([0, 0, 0])}
    windows = torch.tensor([[0.0, 0, 40, 40], [0, 0, 40, 40], [30, 30, 100, 100]])
    # boxes 0 and 1 from two windows that coincide: IoU 100 / 120 > 0.5, fused as
    # (0.9 * 20 + 0.3 * 22) / 1.2 = 20.5 on x2; the box of window 2 is alone
    out = merge_windows(dets, torch.tensor([0, 1, 2]), windows, (100, 100), 0.5, 1.0, "fusion")
    torch.testing.assert_close(out["boxes"], torch.tensor([[10.0, 10, 20.5, 20], [50, 50, 60, 60]]))
    torch.testing.assert_close(out["scores"], torch.tensor([0.9, 0.8]))
    nms = merge_windows(dets, torch.tensor([0, 1, 2]), windows, (100, 100), 0.5, 1.0, "nms")
    torch.testing.assert_close(nms["boxes"], boxes[[0, 2]])
    with pytest.raises(ValueError, match="merge='wbf'"):
        merge_windows(dets, torch.tensor([0, 1, 2]), windows, (100, 100), 0.5, 1.0, "wbf")


def test_cut_boxes_only_at_inner_edges():
    frames = torch.tensor([[0.0, 0, 100, 100]] * 3 + [[100.0, 0, 200, 100]])
    boxes = torch.tensor([[0.0, 0, 10, 10],  # on the scene's border: whole
                          [50, 50, 99, 60],  # 1 px from the inner right edge: cut
                          [50, 50, 97, 60],  # 3 px: not cut at margin 2
                          [100, 0, 120, 100]])  # inner left edge of the second window
    assert cut_boxes(boxes, frames, (200, 100), 2.0).tolist() == [False, True, False, True]


def test_cut_boxes_at_exactly_the_margin_on_each_inner_edge():
    # a window inside a 300 x 300 scene on every side: a box exactly `margin` (2 px) from an
    # inner edge is cut (the margin is inclusive), 2.5 px is not; each edge on its own
    frame = torch.tensor([[100.0, 100, 200, 200]])
    at = [[102.0, 150, 150, 160], [150, 102, 160, 150], [150, 150, 198, 160], [150, 150, 160, 198]]
    off = [[102.5, 150, 150, 160], [150, 102.5, 160, 150], [150, 150, 197.5, 160],
           [150, 150, 160, 197.5]]
    for boxes, expected in ((at, True), (off, False)):
        got = cut_boxes(torch.tensor(boxes), frame.expand(4, 4), (300, 300), 2.0)
        assert got.tolist() == [expected] * 4, boxes
    # the window in the corner of a 200 x 200 scene: its right and bottom edges are the
    # scene's border, where a box is whole
    got = cut_boxes(torch.tensor(at), frame.expand(4, 4), (200, 200), 2.0)
    assert got.tolist() == [True, True, False, False]


def test_overlapping_pairs_include_touching_windows():
    windows = torch.tensor([[0.0, 0, 10, 10], [10, 0, 20, 10], [30, 0, 40, 10], [0, 10, 10, 20]])
    assert overlapping_pairs(windows, 1.0, chunk=2).tolist() == [[0, 1], [0, 3], [1, 3]]
    assert overlapping_pairs(windows, 0.0).tolist() == []


def test_no_detections_anywhere():
    det = run([], 300, 300)
    assert det["boxes"].shape == (0, 4) and det["scores"].shape == (0,)
