"""retina.analysis.worst and .matching: missed and false boxes per image from COCOeval."""

import pytest

from retina.analysis.matching import match
from retina.analysis.worst import image_rows, to_markdown
from retina.training.coco_eval import run_cocoeval
from tests.helpers import DETS, GT


def test_missed_and_false_boxes_at_a_score_threshold():
    ev = run_cocoeval(GT, DETS, backend="pycocotools")
    matching = match(ev, 0.5)
    assert matching.det_gt == {1: 1, 2: 0, 3: 0, 4: 0, 5: 0, 6: 0, 7: 6, 8: 7}  # det id -> gt id
    assert matching.gt_det == {1: 1, 2: 0, 3: 0, 4: 0, 5: 0, 6: 7, 7: 8}
    # >= 0.3 keeps d1 (finds g1) and d2, d3, d5, d6 (false); g6 and g7 were found by d7, d8
    # only, below the threshold: missed with g2..g5
    (row,) = image_rows(ev, matching, score_thresh=0.3)
    assert {k: row[k] for k in ("image_id", "num_gt", "num_det", "missed", "false")} == {
        "image_id": 1, "num_gt": 7, "num_det": 5, "missed": 6, "false": 4}
    assert row["missed_ids"] == [2, 3, 4, 5, 6, 7] and row["false_ids"] == [2, 3, 5, 6]
    (row,) = image_rows(ev, matching, score_thresh=0.0)
    assert (row["missed"], row["false"]) == (4, 5)
    assert "| 1 | 1.png | 7 | 8 | 4 | 5 | [png](w/1.png) |" in to_markdown([row], 0.0, {1: "w/1.png"})


def test_matching_asks_for_pycocotools_records():
    with pytest.raises(TypeError, match="COCOeval_faster does not keep: .*backend='pycocotools'"):
        match(run_cocoeval(GT, DETS))
