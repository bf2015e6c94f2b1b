"""retina.analysis.errors: TIDE's error types on hand-built detections, costed by COCOeval."""

import numpy as np
import pytest

from retina.analysis.errors import ERROR_TYPES, breakdown, classify, error_type
from retina.analysis.matching import match
from retina.training.coco_eval import run_cocoeval, summarize
from tests.helpers import DETS, GT, A, det, one_image_coco


def test_each_false_positive_gets_its_tide_type():
    ev = run_cocoeval(GT, DETS, iou_thrs=[0.5], backend="pycocotools")
    errors = classify(ev, match(ev, 0.5))
    assert errors.det == {2: ("classification", 2), 3: ("localisation", 3), 4: ("duplicate", 0),
                          5: ("background", 0), 6: ("both", 0)}
    assert sorted(errors.missed) == [4, 5]
    assert errors.fixes == {2: 2, 3: 3}  # g2 <- d2, g3 <- d3
    assert [errors.count(k) for k in ERROR_TYPES] == [1, 1, 1, 1, 1, 2]


def kind(iou, same, used):
    return error_type(np.array(iou), np.array(same), np.array(used), background_iou=0.1)


def test_error_type_follows_tides_order():
    assert kind([0.3], [True], [False]) == ("localisation", 0)
    assert kind([0.3], [True], [True]) == ("localisation", 0)  # fixed only if the box is free
    assert kind([0.7], [False], [False]) == ("classification", 0)
    assert kind([0.7], [True], [True]) == ("duplicate", None)
    assert kind([0.05], [False], [False]) == ("background", None)
    assert kind([0.3], [False], [False]) == ("both", None)
    # localisation is tested first (TIDE): right class at 0.3 beats another class at 0.9
    assert kind([0.3, 0.9], [True, False], [False, False]) == ("localisation", 0)


def test_fixing_each_type_gains_the_hand_computed_map_50():
    # COCO's 101-point AP: interpolated precision p over the recall thresholds 0, .01, .., 1.
    # class a (3 boxes), by score: d5 F, d6 F, d1 T (P 1/3, R 1/3), d4 F, d7 T (P 2/5, R 2/3)
    #   -> 2/5 on the 67 thresholds <= 2/3: AP_a = 26.8 / 101
    # class b (4 boxes): d2 F, d3 F, d8 T (P 1/3, R 1/4) -> 1/3 on 26 thresholds: 26/3 / 101
    base = (26.8 + 26 / 3) / 202
    gains = {
        # d2 becomes a true positive of class a (P 1, R 1/3; then 2/4 at 2/3, 3/6 at 1):
        #   AP_a = (34 * 1 + 67 * 1/2) / 101; class b without d2: d3 F, d8 T (1/2) -> 13 / 101
        "classification": (67.5 + 13) / 202 - base,
        # d3 on g3: class b d2 F, d3 T (1/2 at 1/4), d8 T (2/3 at 1/2) -> 2/3 on 51 points
        "localisation": (26.8 + 34) / 202 - base,
        # without d6, d4 or d5 class a has 1/2 up to recall 2/3: 33.5 / 101
        "both": (33.5 + 26 / 3) / 202 - base,
        "duplicate": (33.5 + 26 / 3) / 202 - base,
        "background": (33.5 + 26 / 3) / 202 - base,
        # g4, g5 removed: class b has 2 boxes, d8 at P 1/3 R 1/2: 51 / 3 / 101
        "missed": (26.8 + 17) / 202 - base,
    }
    ev = run_cocoeval(GT, DETS, backend="pycocotools")
    result = breakdown(ev)
    assert result["mAP_50"] == pytest.approx(base, abs=1e-12)
    assert result["mAP_50"] == summarize(ev)[0]["mAP_50"]  # the same evaluator's number
    for kind, gain in gains.items():
        assert result["types"][kind]["mAP_50_gain"] == pytest.approx(gain, abs=1e-12), kind
        assert gain > 0
    # pycocotools' precision is tp / (tp + fp + eps): 1 up to rounding
    assert result["mAP_50_all_fixed"] == pytest.approx(1.0, abs=1e-12)


def test_a_crowd_box_is_not_a_missed_box_and_hides_its_detection():
    gt = one_image_coco([(A, [0, 0, 20, 20]), (A, [100, 100, 50, 50])], iscrowd=(2,))
    ev = run_cocoeval(gt, [det(A, [0, 0, 20, 20], 0.9), det(A, [110, 110, 10, 10], 0.8)],
                      backend="pycocotools")
    result = breakdown(ev)
    assert all(v["count"] == 0 for v in result["types"].values())
    assert result["mAP_50"] == result["mAP_50_all_fixed"] == pytest.approx(1.0, abs=1e-12)
