"""retina.analysis.results: a bad results entry is an error naming it, before pycocotools."""

import json

import pytest
from pycocotools.coco import COCO

from retina.analysis.results import check_results, load_results


@pytest.fixture(scope="module")
def gt() -> COCO:
    coco = COCO()
    coco.dataset = {"images": [{"id": 1, "width": 10, "height": 10}, {"id": 2, "width": 10, "height": 10}],
                    "categories": [{"id": 3, "name": "a"}], "annotations": []}
    coco.createIndex()
    return coco


GOOD = {"image_id": 1, "category_id": 3, "bbox": [1, 2, 3, 4], "score": 0.5}


@pytest.mark.parametrize("bad, message", [
    ({**GOOD, "image_id": 99}, "entry 1: unknown image_id 99"),
    ({**GOOD, "category_id": 1}, r"entry 1: unknown category_id 1 \(categories: \[3\]\)"),
    ({**GOOD, "bbox": [1, 2, 3]}, r"entry 1: bbox \[1, 2, 3\] is not 4 finite numbers"),
    ({**GOOD, "bbox": [1, 2, "3", 4]}, "entry 1: bbox .* is not 4 finite numbers"),
    ({**GOOD, "bbox": [1, 2, float("inf"), 4]}, "entry 1: bbox .* is not 4 finite numbers"),
    ({**GOOD, "bbox": [1, 2, -3, 4]}, "entry 1: bbox .* negative width or height"),
    ({**GOOD, "score": float("nan")}, "entry 1: score nan is not a finite number"),
    ({**GOOD, "score": True}, "entry 1: score True is not a finite number"),
    ({k: v for k, v in GOOD.items() if k != "score"}, "entry 1: missing score"),
    ([1, 2], "entry 1: not an object but list"),
    ({**GOOD, "spread": [1, 1, 1, 1]}, "entry 1: has a spread while the first entry has none"),
])
def test_a_bad_entry_is_named(gt, bad, message):
    with pytest.raises(ValueError, match=f"^dets.json {message}"):
        check_results([GOOD, bad, GOOD], gt, source="dets.json")


def test_good_entries_come_back_clean(gt):
    entries = [{**GOOD, "image_id": 2.0, "extra": "x", "spread": [1, 2, 3, 4]},
               {**GOOD, "spread": [0, 0, 0, 0.5]}]
    assert check_results(entries, gt) == [
        {"image_id": 2, "category_id": 3, "bbox": [1.0, 2.0, 3.0, 4.0], "score": 0.5,
         "spread": [1.0, 2.0, 3.0, 4.0]},
        {"image_id": 1, "category_id": 3, "bbox": [1.0, 2.0, 3.0, 4.0], "score": 0.5,
         "spread": [0.0, 0.0, 0.0, 0.5]},
    ]
    with pytest.raises(ValueError, match="entry 1: spread .* not 4 finite numbers"):
        check_results([entries[0], {**GOOD, "spread": [1, 2]}], gt)


def test_load_results_names_the_file(gt, tmp_path):
    path = tmp_path / "r.json"
    path.write_text('[{"image_id": 1,')
    with pytest.raises(ValueError, match="r.json is not valid JSON"):
        load_results(path, gt)
    path.write_text(json.dumps({"annotations": []}))
    with pytest.raises(ValueError, match="r.json: expected a list of detections, got dict"):
        load_results(path, gt)
    # NaN as JSON writes it: the entry is named
    path.write_text('[{"image_id": 1, "category_id": 3, "bbox": [0, 0, 1, 1], "score": NaN}]')
    with pytest.raises(ValueError, match="r.json entry 0: score nan"):
        load_results(path, gt)
    with pytest.raises(FileNotFoundError, match="results file not found"):
        load_results(tmp_path / "missing.json", gt)
