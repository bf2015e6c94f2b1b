"""retina.analysis.pr_curves: best-F1 points read off COCOeval's own arrays."""

import pytest

from retina.analysis.pr_curves import best_f1, curves
from retina.training.coco_eval import per_class_metrics, run_cocoeval
from tests.helpers import DETS, GT


def test_best_f1_on_the_hand_built_case():
    ev = run_cocoeval(GT, DETS)
    best = best_f1(ev, 0.5)
    # class a by score: d5 F, d6 F, d1 T (P 1/3, R 1/3), d4 F, d7 T (P 2/5, R 2/3): interpolated
    # precision 0.4 up to recall 0.66, so F1 = 0.8 R / (0.4 + R) is best at R = 0.66, reached
    # by d7 (score 0.1)
    assert best[1] == pytest.approx({"f1": 0.528 / 1.06, "precision": 0.4, "recall": 0.66,
                                     "score": 0.1})
    # class b: d2 F, d3 F, d8 T (P 1/3, R 1/4): F1 (2/3 * 1/4) / (1/3 + 1/4) = 2/7 at d8 (0.05)
    assert best[2] == pytest.approx({"f1": 2 / 7, "precision": 1 / 3, "recall": 0.25, "score": 0.05})


def test_curves_are_the_evaluators_precision():
    ev = run_cocoeval(GT, DETS)
    recall, precision, scores = curves(ev, 0.5)
    assert recall.shape == (101,) and precision.shape == scores.shape == (101, 2)
    for k, cat in enumerate(ev.params.catIds):  # the mean of a curve is the class's AP_50
        assert precision[:, k].mean() == pytest.approx(per_class_metrics(ev)[cat]["AP_50"], abs=1e-12)
    with pytest.raises(ValueError, match="0.42 is not one of the evaluated thresholds"):
        curves(ev, 0.42)
