"""The assigners at their exact boundaries: IoU equal to each threshold, anchor centres exactly
on each edge of a box. Expected sides from the documented semantics of the reference code:

- MaxIoU, torchvision's ``Matcher``: IoU >= high is foreground, IoU < low background, between
  ignored (``BETWEEN_THRESHOLDS``). torchvision itself is the oracle where it applies.
- ATSS (Zhang et al. 2020; mmdetection's ``ATSSAssigner``): a candidate is positive when its
  IoU >= mean + std of its box's candidates (``>=``, as both) and its centre lies inside the
  box. mmdetection and the ATSS code require the centre at least 0.01 px inside every edge
  (``min(l, t, r, b) > 0.01``); retina.assign.atss requires it *strictly* inside (every
  distance > 0, no margin). Both leave a centre exactly on an edge out; pinned here: on each
  of the four edges, out; 0.005 px inside, in (where mmdetection would say out).

The boxes are built so that every IoU is exact in float32: 100 / 200 = 0.5, 100 / 250 = 0.4.
"""

import pytest
import torch
from torchvision.models.detection._utils import Matcher

from retina.assign import BACKGROUND, IGNORE, ATSSAssigner, MaxIoUAssigner

# ---------------------------------------------------------------- MaxIoU


def test_iou_exactly_at_each_threshold_as_torchvision_matcher():
    # one box (0, 0, 10, 10), area 100; anchors of width 10 from y = 0 down to y = h:
    #   h = 20: IoU 100 / 200 = 0.5  (= fg_iou: foreground)
    #   h = 25: IoU 100 / 250 = 0.4  (= bg_iou: ignored, not background)
    #   h = 26: IoU 100 / 260 < 0.4  (background)
    #   h = 19: IoU 100 / 190 > 0.5  (foreground)
    #   h = 22: IoU 100 / 220 = 0.4545 (between: ignored)
    anchors = torch.tensor([[0.0, 0, 10, h] for h in (20, 25, 26, 19, 22)])
    gt = torch.tensor([[[0.0, 0, 10, 10]]])
    got = MaxIoUAssigner(0.5, 0.4, allow_low_quality=False)(anchors, [5], gt, torch.tensor([[0]]))
    assert got[0].tolist() == [0, IGNORE, BACKGROUND, 0, IGNORE]
    iou = torch.tensor([[100 / 200, 100 / 250, 100 / 260, 100 / 190, 100 / 220]])
    tv = Matcher(0.5, 0.4, allow_low_quality_matches=False)(iou)
    assert [{-1: BACKGROUND, -2: IGNORE}.get(v, v) for v in tv.tolist()] == got[0].tolist()


def test_equal_thresholds_leave_no_ignore_band():
    # fg = bg = 0.5: IoU 0.5 foreground, anything below background
    anchors = torch.tensor([[0.0, 0, 10, 20], [0, 0, 10, 22]])  # IoU 0.5, 0.4545
    got = MaxIoUAssigner(0.5, 0.5, allow_low_quality=False)(
        anchors, [2], torch.tensor([[[0.0, 0, 10, 10]]]), torch.tensor([[0]]))
    assert got[0].tolist() == [0, BACKGROUND]


def test_low_quality_matches_keep_every_tied_best_anchor_but_none_at_iou_0():
    # box 0's best IoU is 0.25 (anchors 0 and 1, a tie): both foreground with allow_low_quality
    # (torchvision's Matcher keeps all ties). Box 1 (far away) overlaps nothing: its "best"
    # IoU 0 claims no anchor (torchvision would match it to every anchor of IoU 0).
    # anchors 0 (0, 0, 20, 20) and 1 (10, 10, 30, 30) each hold box 0 (10, 10, 20, 20) whole:
    # IoU 100 / 400 = 0.25 both, below bg_iou. Anchor 2 is far from both boxes.
    anchors = torch.tensor([[0.0, 0, 20, 20], [10, 10, 30, 30], [100, 100, 120, 120]])
    gt = torch.tensor([[[10.0, 10, 20, 20], [500.0, 500, 510, 510]]])
    got = MaxIoUAssigner(0.5, 0.4, allow_low_quality=True)(anchors, [3], gt, torch.tensor([[0, 0]]))
    assert got[0].tolist() == [0, 0, BACKGROUND]
    got = MaxIoUAssigner(0.5, 0.4, allow_low_quality=False)(anchors, [3], gt, torch.tensor([[0, 0]]))
    assert got[0].tolist() == [BACKGROUND, BACKGROUND, BACKGROUND]


def test_a_padding_row_never_claims_an_anchor_even_with_a_larger_iou():
    # padding rows hold zeros here, but a real one could hold anything: label -1 rules it out
    anchors = torch.tensor([[0.0, 0, 10, 10]])
    gt = torch.tensor([[[0.0, 0, 10, 20], [0.0, 0, 10, 10]]])  # row 0 IoU 0.5, row 1 (pad) 1.0
    got = MaxIoUAssigner(0.5, 0.4)(anchors, [1], gt, torch.tensor([[0, -1]]))
    assert got.tolist() == [[0]]


# ---------------------------------------------------------------- ATSS: the IoU threshold


def test_atss_candidate_at_exactly_mean_plus_std_is_positive():
    # one level, box (0, 0, 20, 20); four 10 px anchors centred (5, 5) (15, 5) (5, 15) (15, 15),
    # all inside, all IoU 100 / 400 = 0.25: mean 0.25, std 0 -> threshold 0.25 = each IoU.
    anchors = torch.tensor([[0.0, 0, 10, 10], [10, 0, 20, 10], [0, 10, 10, 20], [10, 10, 20, 20]])
    got = ATSSAssigner(topk=4)(anchors, [4], torch.tensor([[[0.0, 0, 20, 20]]]), torch.tensor([[0]]))
    assert got[0].tolist() == [0, 0, 0, 0]


def test_atss_single_candidate_is_its_own_threshold():
    # topk 1 on one level: one candidate, std of one value 0 (no Bessel correction possible),
    # threshold = its IoU: positive if its centre is inside. Anchor (5, 0, 25, 20), centre
    # (15, 10) inside box (10, 0, 30, 20): IoU 300 / 500 = 0.6.
    got = ATSSAssigner(topk=1)(torch.tensor([[5.0, 0, 25, 20]]), [1],
                               torch.tensor([[[10.0, 0, 30, 20]]]), torch.tensor([[0]]))
    assert got.tolist() == [[0]]


def test_atss_mean_plus_bessel_std_splits_the_candidates():
    # box (0, 0, 20, 20); five anchors of its size shifted by (0, 0), (5, 0), (0, 5), (5, 5),
    # (10, 10): IoU 1, 300/500, 300/500, 225/575, 100/700 = 1, .6, .6, .3913, .1429
    # -> mean .5468, Bessel std .3156 -> threshold .8624: only the first. (The last centre,
    # (20, 20), is the box's corner: outside anyway.)
    anchors = torch.tensor([[0.0, 0, 20, 20], [5, 0, 25, 20], [0, 5, 20, 25], [5, 5, 25, 25],
                            [10, 10, 30, 30]])
    got = ATSSAssigner(topk=5)(anchors, [5], torch.tensor([[[0.0, 0, 20, 20]]]), torch.tensor([[0]]))
    ious = torch.tensor([1.0, 0.6, 0.6, 225 / 575, 100 / 700], dtype=torch.float64)
    assert 1.0 > float(ious.mean() + ious.std()) > 0.6  # the arithmetic above
    assert got[0].tolist() == [0, BACKGROUND, BACKGROUND, BACKGROUND, BACKGROUND]
    # the population std (no Bessel) would give .2823 -> threshold .8291: the same split here,
    # but two candidates of IoU .6 and 0 tell them apart: mean .3, std .4243 (Bessel) or .3
    # (population) -> threshold .7243 or .6: with Bessel, the .6 candidate is out
    two = torch.tensor([[0.0, 0, 20, 20], [40, 40, 60, 60]])
    box = torch.tensor([[[5.0, 0, 25, 20]]])  # IoU .6 with anchor 0, centre (10, 10) inside
    assert ATSSAssigner(topk=2)(two, [2], box, torch.tensor([[0]]))[0].tolist() == [BACKGROUND] * 2


# ---------------------------------------------------------------- ATSS: the centre-inside rule

# One anchor (20 x 20) and one box (20 x 20) on one level, topk 1: the IoU test always passes
# (a single candidate is its own threshold), so the centre alone decides.
BOX = (10.0, 10.0, 30.0, 30.0)
ON_EDGE = {  # anchor centred exactly on one edge of BOX, the other coordinate its centre
    "left": (10.0, 20.0), "top": (20.0, 10.0), "right": (30.0, 20.0), "bottom": (20.0, 30.0),
}


def assign_one(centre: tuple[float, float]) -> int:
    x, y = centre
    anchor = torch.tensor([[x - 10, y - 10, x + 10, y + 10]])
    return int(ATSSAssigner(topk=1)(anchor, [1], torch.tensor([[BOX]]), torch.tensor([[0]]))[0, 0])


@pytest.mark.parametrize("edge", list(ON_EDGE))
def test_atss_centre_exactly_on_an_edge_is_outside(edge):
    assert assign_one(ON_EDGE[edge]) == BACKGROUND


@pytest.mark.parametrize("edge", list(ON_EDGE))
def test_atss_centre_just_inside_an_edge_is_inside(edge):
    # 0.005 px inside (exact in float32 at these coordinates: 10.005 etc. differ from 10):
    # strictly inside here; mmdetection's 0.01 px margin would leave it out
    x, y = ON_EDGE[edge]
    step = {"left": (0.005, 0), "top": (0, 0.005), "right": (-0.005, 0), "bottom": (0, -0.005)}[edge]
    assert assign_one((x + step[0], y + step[1])) == 0


def test_atss_tie_between_two_boxes_goes_to_the_first():
    # two identical boxes claim the same anchor with the same IoU: the lower index wins
    anchors = torch.tensor([[0.0, 0, 10, 10]])
    gt = torch.tensor([[[0.0, 0, 10, 10], [0.0, 0, 10, 10]]])
    assert ATSSAssigner(topk=1)(anchors, [1], gt, torch.tensor([[0, 1]])).tolist() == [[0]]
