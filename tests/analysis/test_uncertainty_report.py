"""retina.analysis.uncertainty_report: does the predicted spread rank the localisation error?"""

import math

import pytest

from retina.analysis.matching import match
from retina.analysis.uncertainty_report import has_spread, spread_vs_error, to_markdown, widest
from retina.training.coco_eval import run_cocoeval
from tests.helpers import A, det, one_image_coco

# four 20 x 20 boxes; detection i is box i shifted right by s_i * 20 px: IoU (1 - s) / (1 + s),
# so 1 - IoU grows with s, and a spread of s * (w, h, w, h) has relative spread s
SHIFTS = [0.05, 0.3, 0.1, 0.2]
GT = one_image_coco([(A, [40.0 * i, 0, 20, 20]) for i in range(4)])


def dets(spread_of):
    return [det(A, [40.0 * i + 20 * s, 0, 20, 20], 0.9 - 0.1 * i) | {"spread": [20 * spread_of(s)] * 4}
            for i, s in enumerate(SHIFTS)]


def test_spread_that_grows_with_the_error_ranks_it_exactly():
    ev = run_cocoeval(GT, dets(lambda s: s), backend="pycocotools")
    assert has_spread(ev)
    assert spread_vs_error(ev, match(ev, 0.5)) == {"spearman": pytest.approx(1.0), "num_matched": 4}
    ev = run_cocoeval(GT, dets(lambda s: 1 - s), backend="pycocotools")
    assert spread_vs_error(ev, match(ev, 0.5))["spearman"] == pytest.approx(-1.0)


def test_widest_lists_the_widest_boxes_with_their_iou():
    ev = run_cocoeval(GT, dets(lambda s: s), backend="pycocotools")
    rows = widest(ev, match(ev, 0.5), k=2, min_score=0.0)
    assert [r["relative_spread"] for r in rows] == pytest.approx([0.3, 0.2])
    assert [r["iou"] for r in rows] == pytest.approx([0.7 / 1.3, 0.8 / 1.2])
    assert rows[0]["score"] == pytest.approx(0.8) and rows[0]["class"] == "a"
    text = to_markdown(rows, {"spearman": 1.0, "num_matched": 4}, 0.0)
    assert "over the 4 true positives at IoU 0.5: **1.000**" in text and "| 0.538 |" in text


def test_too_few_matches_give_no_correlation():
    ev = run_cocoeval(GT, dets(lambda s: s)[:1], backend="pycocotools")
    assert math.isnan(spread_vs_error(ev, match(ev, 0.5))["spearman"])
    assert not has_spread(run_cocoeval(GT, [det(A, [0, 0, 20, 20], 0.9)]))
