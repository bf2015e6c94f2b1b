"""retina.infer.serving.options: a request's conf / max_det / classes / tile, checked, and
what they keep."""

from __future__ import annotations

import pytest
import torch

from retina.infer.serving.decode import BadRequest
from retina.infer.serving.options import RequestOptions, parse_options, select

NAMES, CAT_IDS = ["Tree", "shrub"], [1, 7]


def parse(**raw: str) -> RequestOptions:
    return parse_options(raw, NAMES, CAT_IDS)


def test_values_are_parsed_and_empty_ones_unset():
    assert parse() == RequestOptions()
    assert parse(conf="0.3", max_det="5", classes="tree, 7", tile="400") == RequestOptions(
        0.3, 5, (0, 1), 400)  # a name in any case, or a category id
    assert parse(conf="", classes=" ") == RequestOptions()


@pytest.mark.parametrize("raw, reason", [
    ({"cnf": "0.3"}, "unknown option 'cnf' (did you mean conf?); options: conf, max_det, "
                     "classes, tile"),
    ({"conf": "high"}, "conf='high': expected a number"),
    ({"conf": "1.5"}, "conf=1.5: expected from 0.0 to 1.0"),
    ({"max_det": "2.5"}, "max_det='2.5': expected an integer"),
    ({"max_det": "0"}, "max_det=0: expected >= 1"),
    ({"tile": "16"}, "tile=16: expected >= 64"),
    ({"classes": "tres"}, "classes: unknown class 'tres' (did you mean Tree?); classes: Tree, "
                          "shrub"),
    ({"classes": "3"}, "classes: unknown class '3'; classes: Tree, shrub"),
    ({"classes": ","}, "classes= is empty: name at least one class"),
])
def test_a_bad_option_is_one_line_naming_it(raw, reason):
    with pytest.raises(BadRequest) as info:
        parse(**raw)
    assert (info.value.status, info.value.reason) == (400, reason)


def test_select_keeps_score_class_and_count():
    det = {"boxes": torch.arange(16.0).reshape(4, 4), "scores": torch.tensor([0.875, 0.75, 0.5, 0.125]),
           "labels": torch.tensor([0, 1, 0, 0])}
    assert select(det, RequestOptions()) is det
    # above conf, as retina predict's conf= (the postprocess's score threshold): 0.5 is out
    assert select(det, RequestOptions(conf=0.5))["scores"].tolist() == [0.875, 0.75]
    assert select(det, RequestOptions(conf=0.4999))["scores"].tolist() == [0.875, 0.75, 0.5]
    kept = select(det, RequestOptions(classes=(0,), max_det=2))
    assert kept["scores"].tolist() == [0.875, 0.5] and kept["boxes"][1].tolist() == [8, 9, 10, 11]
    assert select(det, RequestOptions(conf=0.95))["boxes"].shape == (0, 4)
