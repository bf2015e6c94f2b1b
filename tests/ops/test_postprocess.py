"""retina.ops.postprocess: against a per-image, per-class reference; GFL's spread."""

import pytest
import torch
from torchvision.ops import batched_nms, nms

from retina.model.anchors import AnchorGenerator
from retina.ops import postprocess
from retina.ops.boxes import DeltaCoder, DistanceCoder
from retina.ops.levels import flatten_levels
from retina.ops.postprocess import Postprocess, nms_rank, per_group_nms, top_per_image
from tests.helpers import gfl_anchors, near_threshold_pairs
from tests.helpers import per_group_nms as reference_nms


def reference(cls_maps, box_maps, anchors, sizes, pp, k):
    """Straightforward per-image, per-level, per-class postprocess."""
    coder, out = DeltaCoder(), []
    for i in range(cls_maps[0].shape[0]):
        boxes, scores, labels = [], [], []
        for c, b, a in zip(cls_maps, box_maps, anchors):
            h, w = c.shape[-2:]
            s = c[i].reshape(-1, k, h, w).permute(2, 3, 0, 1).reshape(-1).sigmoid()
            d = b[i].reshape(-1, 4, h, w).permute(2, 3, 0, 1).reshape(-1, 4)
            keep = (s > pp.score_thresh).nonzero().squeeze(1)
            top = s[keep].argsort(descending=True)[: pp.topk]
            idx = keep[top]
            bx = coder.decode(d[idx // k], a[idx // k])
            bx[:, 0::2] = bx[:, 0::2].clamp(0, float(sizes[i, 1]))
            bx[:, 1::2] = bx[:, 1::2].clamp(0, float(sizes[i, 0]))
            boxes.append(bx), scores.append(s[idx]), labels.append(idx % k)
        boxes, scores, labels = torch.cat(boxes), torch.cat(scores), torch.cat(labels)
        keep_all = []
        for cl in labels.unique():
            m = (labels == cl).nonzero().squeeze(1)
            keep_all.append(m[nms(boxes[m], scores[m], pp.nms_thresh)])
        kept = torch.cat(keep_all)
        kept = kept[scores[kept].argsort(descending=True)][: pp.max_det]
        out.append({"boxes": boxes[kept], "scores": scores[kept], "labels": labels[kept]})
    return out


def random_outputs(b, k, a, shapes, seed):
    g = torch.Generator().manual_seed(seed)
    cls = [torch.randn(b, a * k, h, w, generator=g) * 2 - 2 for h, w in shapes]
    box = [torch.randn(b, a * 4, h, w, generator=g) * 0.3 for h, w in shapes]
    return cls, box


def test_agrees_with_per_image_per_class_reference():
    gen = AnchorGenerator()
    shapes = [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]
    anchors = gen(shapes)
    sizes = torch.tensor([[128, 128], [100, 120], [128, 90]])
    # shift -2: about 30 % of the scores survive the threshold, more than top-k on every
    # level but fewer than half (top-k over the survivors, not over every logit)
    cases = [(1000, 100, 0.0), (50, 30, 0.0), (7, 300, 0.0), (7, 300, -2.0), (40, 100, -2.0)]
    for seed, (topk, max_det, shift) in enumerate(cases):
        cls, box = random_outputs(3, 4, 9, shapes, seed)
        cls = [c + shift for c in cls]
        pp = Postprocess(DeltaCoder(), topk=topk, max_det=max_det)
        got = pp(cls, box, anchors, sizes)
        ref = reference(cls, box, anchors, sizes, pp, 4)
        for g, r, (h, w) in zip(got, ref, sizes.tolist()):
            assert len(g["scores"]) == len(r["scores"]) > 0
            torch.testing.assert_close(g["scores"], r["scores"])
            torch.testing.assert_close(g["boxes"], r["boxes"], atol=1e-4, rtol=1e-5)
            assert torch.equal(g["labels"], r["labels"])
            # inside this image's own size, and some box was clipped there (x2 at W, y2 at H)
            x, y = g["boxes"][:, 0::2], g["boxes"][:, 1::2]
            assert (x >= 0).all() and (x <= w).all() and (y >= 0).all() and (y <= h).all()
            assert (x == w).any() and (y == h).any()


@pytest.mark.parametrize("k,shift", [(1, -2.0), (3, -4.0)])
def test_top_k_of_the_survivors_when_few_locations_pass(k, shift, monkeypatch):
    # fewer than half of the locations pass (any class), but more than top-k scores per level
    # and image: the survivors' own top-k (not the dense top-k of every logit)
    gen = AnchorGenerator()
    shapes = [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]
    anchors = gen(shapes)
    sizes = torch.tensor([[128, 128], [100, 120]])
    cls, box = random_outputs(2, k, 9, shapes, 11)
    cls = [c + shift for c in cls]
    calls = []
    monkeypatch.setattr(postprocess, "top_per_image",
                        lambda *a: calls.append(1) or top_per_image(*a))
    pp = Postprocess(DeltaCoder(), topk=7, max_det=300)
    got = pp(cls, box, anchors, sizes)
    passing = [(c.view(2, 9, k, -1).amax(2) > pp.logit_thresh).float().mean() for c in cls]
    assert max(passing) < 0.5 and calls  # what makes this the case it is named after
    for g, r in zip(got, reference(cls, box, anchors, sizes, pp, k)):
        assert len(g["scores"]) == len(r["scores"]) > 7
        torch.testing.assert_close(g["scores"], r["scores"])
        torch.testing.assert_close(g["boxes"], r["boxes"], atol=1e-4, rtol=1e-5)
        assert torch.equal(g["labels"], r["labels"])


def test_no_candidates_gives_empty_detections():
    shapes = [(4, 4), (2, 2), (1, 1), (1, 1), (1, 1)]
    anchors = AnchorGenerator()(shapes)
    cls, box = random_outputs(2, 3, 9, shapes, 0)
    cls = [c - 100 for c in cls]
    out = Postprocess(DeltaCoder())(cls, box, anchors, torch.tensor([[32, 32]] * 2))
    assert [len(o["boxes"]) for o in out] == [0, 0]
    assert out[0]["boxes"].shape == (0, 4)


def test_saturated_scores_keep_max_det_per_image():
    shapes = [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]
    anchors = AnchorGenerator()(shapes)
    cls, box = random_outputs(2, 5, 9, shapes, 3)
    cls = [c.abs() + 5 for c in cls]  # every score above the threshold
    out = Postprocess(DeltaCoder(), max_det=100)(cls, box, anchors, torch.tensor([[128, 128]] * 2))
    assert [len(o["scores"]) for o in out] == [100, 100]
    assert all((o["scores"][:-1] >= o["scores"][1:]).all() for o in out)


def test_threshold_zero_keeps_the_top_k_of_every_level():
    shapes = [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)]
    anchors = AnchorGenerator()(shapes)
    cls, box = random_outputs(2, 3, 9, shapes, 5)
    cls = [c - 30 for c in cls]  # every score far below the usual threshold, none is 0
    pp = Postprocess(DeltaCoder(), score_thresh=0.0, topk=4, nms_thresh=1.0, max_det=1000)
    out = pp(cls, box, anchors, torch.tensor([[64, 64]] * 2))
    assert [len(o["scores"]) for o in out] == [4 * len(shapes)] * 2


def test_eager_survivors_match_the_fixed_size_candidates_of_exported_graphs():
    """The threshold-first path and the top-k-first path (exported graphs) select the
    same candidates, in the typical case and when a level is saturated."""
    shapes = [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]
    anchors = AnchorGenerator()(shapes)
    sizes = torch.tensor([[128, 128], [100, 120]])
    for topk, shift in [(1000, 0.0), (20, 3.0), (20, -2.0)]:
        cls, box = random_outputs(2, 4, 9, shapes, 7)
        cls = [c + shift for c in cls]
        pp = Postprocess(DeltaCoder(), topk=topk)
        flat = pp.survivors(cls, box, anchors, sizes)
        _, scores, _, keep, _ = pp.candidates(cls, box, anchors, sizes)  # (B, L)
        assert keep.sum() == len(flat["scores"]) > 0
        for i in range(2):
            torch.testing.assert_close(
                flat["scores"][flat["image"] == i].sort().values, scores[i][keep[i]].sort().values
            )


def test_postprocess_gathers_spread_like_the_boxes():
    shapes = [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)]
    level = gfl_anchors(shapes)
    g = torch.Generator().manual_seed(0)
    cls = [torch.randn(2, 2, h, w, generator=g) for h, w in shapes]
    box = [torch.randn(2, 68, h, w, generator=g) for h, w in shapes]
    coder = DistanceCoder()
    sizes = torch.tensor([[1000, 1000], [1000, 1000]])  # clipped only at 0: boxes stay distinct
    dets = Postprocess(coder, score_thresh=0.3, nms_thresh=0.6)(cls, box, level, sizes)
    # reference: every location decoded and clipped; each detection is one of them
    anchors = torch.cat(level)
    for i, det in enumerate(dets):
        assert len(det["boxes"]) > 0 and det["spread"].shape == (len(det["boxes"]), 4)
        reg = flatten_levels([b[i : i + 1] for b in box], 68)[0]  # (N, 68)
        all_boxes = coder.decode(reg, anchors).clamp(0, 1000)
        nearest = torch.cdist(det["boxes"], all_boxes).argmin(dim=1)
        torch.testing.assert_close(det["boxes"], all_boxes[nearest])
        torch.testing.assert_close(det["spread"], coder.spread(reg, anchors)[nearest])
    shapes = [(4, 4), (2, 2), (2, 2), (1, 1), (1, 1)]
    retina = Postprocess(DeltaCoder())(
        [torch.randn(1, 9, h, w, generator=g) for h, w in shapes],
        [torch.zeros(1, 36, h, w) for h, w in shapes],
        AnchorGenerator()(shapes), torch.tensor([[32, 32]]),
    )
    assert set(retina[0]) == {"boxes", "scores", "labels"}


def test_nms_rank_is_per_image_per_class_nms_at_coco_size():
    # 16 images x 80 classes at 1333 x 800, 12 boxes per group in pairs near IoU 0.5
    boxes, scores, image, labels = near_threshold_pairs(16, 80)
    kept, rank = nms_rank(boxes, scores, image, labels, 80, 0.5, 16)
    exact = reference_nms(boxes, scores, image, labels, 0.5)
    assert set(kept.tolist()) == exact == reference_nms(boxes, scores, image, labels, 0.5,
                                                        torch.float32)
    assert 0 < len(exact) < len(boxes)  # 1280 groups x (6 + the pairs under the threshold)
    assert (scores[kept][:-1] >= scores[kept][1:]).all()  # by decreasing score
    for i in range(16):  # rank: place among the kept boxes of the image
        assert rank[image[kept] == i].tolist() == list(range(int((image[kept] == i).sum())))
    # a float32 shift of (image * K + class) x 1334 px (before) flips many of them, and
    # torchvision's batched_nms shifts each image's classes in float32 alike
    group = (image * 80 + labels).float()
    shifted = nms(boxes + (group * (boxes.max() + 1))[:, None], scores, 0.5)
    assert len(set(shifted.tolist()) ^ exact) > 100
    per_image = set()
    for i in range(16):
        m = (image == i).nonzero().squeeze(1)
        per_image |= set(m[batched_nms(boxes[m], scores[m], labels[m], 0.5)].tolist())
    assert per_image != exact


def test_nms_rank_is_exact_for_boxes_under_a_pixel():
    # pairs of 0.01 px boxes at IoU 0.5 -+ 1e-6 in image 1, class 2 of 2 images x 3 classes;
    # a 1333 px box elsewhere makes the cells 1334 px: this group moves by (2668, 1334) px,
    # where float32 steps 2^-11 px, a tenth of these boxes
    w, pairs = 0.01, []
    for eps, y in ((-1e-6, 0.003), (1e-6, 0.5)):  # the second pair far below the first
        d = w * (1 - (0.5 + eps)) / (1 + (0.5 + eps))
        pairs += [[0.002, y, 0.002 + w, y + w], [0.002 + d, y, 0.002 + d + w, y + w]]
    boxes = torch.tensor(pairs + [[0.0, 0.0, 1333.0, 800.0]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5])
    image, labels = torch.tensor([1, 1, 1, 1, 0]), torch.tensor([2, 2, 2, 2, 0])
    kept, rank = nms_rank(boxes, scores, image, labels, 3, 0.5, 2)
    assert set(kept.tolist()) == reference_nms(boxes, scores, image, labels, 0.5)
    assert kept.tolist() == [0, 1, 2, 4] and rank.tolist() == [0, 1, 2, 0]  # IoU 0.5 + 1e-6 goes
    kept, rank = nms_rank(boxes[:0], scores[:0], image[:0], labels[:0], 3, 0.5, 2)
    assert kept.shape == rank.shape == (0,)


class CornersCoder:
    """The box outputs are the boxes themselves (x1y1x2y2): places boxes exactly."""

    def decode(self, box_reg, anchors):
        return box_reg


def test_postprocess_keeps_the_class_offsets_exact():
    # boxes A and B of class 90 of 91, A = [1200, 1200, 1300, 1300], B = A shifted right by
    # x = 100 (1 - I) / (1 + I) for I = 0.5 + 1e-5 (IoU (100 - x) / (100 + x) = I): B goes.
    # A float32 shift of class 90 by 90 x 1334 = 120060 px, where float32 steps 2^-7 px,
    # makes the IoU fall under 0.5 and keeps B. A class-0 box makes the largest coordinate
    # 1333.
    iou = 0.5 + 1e-5
    x = 100 * (1 - iou) / (1 + iou)
    boxes = torch.tensor([[1200, 1200, 1300, 1300], [1200 + x, 1200, 1300 + x, 1300],
                          [1233, 1233, 1333, 1333]])  # (3, 4), one per position
    box_map = boxes.T.reshape(1, 4, 1, 3)  # (B, A*4, H, W), one anchor per position
    cls_map = torch.full((1, 91, 1, 3), -10.0)
    cls_map[0, 90, 0, :2] = torch.tensor([2.0, 1.0])
    cls_map[0, 0, 0, 2] = 1.0
    anchors = [torch.zeros(3, 4)]
    sizes = torch.tensor([[1334, 1334]])
    assert nms(boxes[:2], torch.tensor([2.0, 1.0]), 0.5).tolist() == [0]
    assert nms(boxes[:2] + 120060, torch.tensor([2.0, 1.0]), 0.5).tolist() == [0, 1]
    pp = Postprocess(CornersCoder())
    (dets,) = pp([cls_map], [box_map], anchors, sizes)
    assert dets["labels"].tolist() == [90, 0]
    boxes, scores, labels, num_dets, _ = pp.padded([cls_map], [box_map], anchors, sizes)
    assert num_dets.tolist() == [2] and labels[0, :2].tolist() == [90, 0]


def test_bucketed_nms_is_per_group_nms_whatever_the_bucket_size():
    # groups of 1 to 40 boxes (near-threshold pairs and random boxes), packed into buckets
    # smaller, larger and much larger than the groups: the kept set never changes
    boxes, scores, image, labels = near_threshold_pairs(3, 5)
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(300, 2, generator=g) * 60
    extra = torch.cat([xy, xy + 5 + torch.rand(300, 2, generator=g) * 20], 1)
    boxes, scores = torch.cat([boxes, extra]), torch.cat([scores, torch.rand(300, generator=g)])
    image = torch.cat([image, torch.randint(0, 3, (300,), generator=g)])
    labels = torch.cat([labels, torch.randint(0, 5, (300,), generator=g)])
    exact = reference_nms(boxes, scores, image, labels, 0.5)
    assert 0 < len(exact) < len(boxes)
    for bucket in (1, 7, 256, 10_000):
        kept = per_group_nms(boxes, scores, image * 5 + labels, 0.5, bucket=bucket)
        assert set(kept.tolist()) == exact
        assert (scores[kept][:-1] >= scores[kept][1:]).all()
    assert per_group_nms(boxes[:0], scores[:0], image[:0], 0.5).shape == (0,)
