"""retina.training.coco_eval: the COCO numbers are pycocotools' own, with either backend."""

import contextlib
import io
import json

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from retina.data.coco import load_coco
from retina.training.coco_eval import (
    BACKENDS,
    PER_CLASS_STATS,
    coco_evaluate,
    from_coco_results,
    per_class_metrics,
    results_coco,
    run_cocoeval,
    summarize,
    to_coco_results,
)
from retina.training.config import ROOT
from tests.helpers import LABELME_COCO, jittered_results, one_image_coco, per_category_stats


@pytest.mark.parametrize("backend", BACKENDS)
def test_coco_numbers_equal_pycocotools_run_directly(tmp_path, backend):
    gt = {
        "images": [{"id": i, "width": 100, "height": 100, "file_name": f"{i}.png"} for i in (1, 2, 3)],
        "categories": [{"id": 3, "name": "a"}, {"id": 7, "name": "b"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 10, 30, 30], "area": 900, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 7, "bbox": [50, 50, 40, 20], "area": 800, "iscrowd": 0},
            {"id": 3, "image_id": 2, "category_id": 3, "bbox": [0, 0, 90, 90], "area": 8100, "iscrowd": 0},
            {"id": 4, "image_id": 3, "category_id": 7, "bbox": [5, 5, 10, 10], "area": 100, "iscrowd": 1},
        ],
    }
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    rng = np.random.default_rng(0)
    dets = [
        {"image_id": int(rng.integers(1, 4)), "category_id": int(rng.choice([3, 7])),
         "bbox": [float(v) for v in rng.uniform(0, 50, 2).tolist() + rng.uniform(5, 50, 2).tolist()],
         "score": float(rng.uniform())}
        for _ in range(40)
    ] + [{"image_id": 1, "category_id": 3, "bbox": [11, 9, 30, 31], "score": 0.9}]
    ours, _ = coco_evaluate(COCO(str(path)), [dict(d) for d in dets], backend=backend)
    gt_coco = COCO(str(path))
    ev = COCOeval(gt_coco, gt_coco.loadRes([dict(d) for d in dets]), "bbox")
    ev.evaluate(), ev.accumulate(), ev.summarize()
    np.testing.assert_allclose(list(ours.values()), ev.stats, rtol=0, atol=1e-6)
    assert ours["mAP"] > 0


# ---------------------------------------------------------------- the two backends


def same_evaluation(coco: COCO, results: list[dict], **kwargs) -> dict[str, float]:
    """faster-coco-eval and pycocotools give the same 12 numbers (to 1e-6, and the same
    table), per-class numbers and precision / recall / score arrays."""
    fast, ref = (run_cocoeval(coco, results, backend=b, **kwargs) for b in BACKENDS)
    assert type(fast).__name__ == "COCOeval_faster" and type(ref) is COCOeval
    (stats, table), (ref_stats, ref_table) = summarize(fast), summarize(ref)
    np.testing.assert_allclose(list(stats.values()), list(ref_stats.values()), rtol=0, atol=1e-6)
    assert table == ref_table and len(table.splitlines()) == 12
    for key in ("precision", "recall", "scores"):
        np.testing.assert_allclose(fast.eval[key], ref.eval[key], rtol=0, atol=1e-6, err_msg=key)
    if not kwargs.get("iou_thrs"):
        fast_class, ref_class = per_class_metrics(fast), per_class_metrics(ref)
        assert fast_class.keys() == ref_class.keys()
        for cat in ref_class:
            np.testing.assert_allclose(list(fast_class[cat].values()),
                                       list(ref_class[cat].values()), rtol=0, atol=1e-6)
    return ref_stats


def test_backends_agree_on_neon():
    coco = load_coco(ROOT / "data" / "neon_trees" / "annotations" / "val.json")  # 1 class
    for seed in range(3):  # gt boxes jittered and rescaled, 5 false boxes per image
        stats = same_evaluation(coco, jittered_results(coco, seed=seed, wrong_class=0.0))
        assert 0.1 < stats["mAP"] < 0.9
    ids = sorted(coco.imgs)
    results = jittered_results(coco, seed=3, wrong_class=0.0)
    same_evaluation(coco, results, image_ids=ids[::2])  # some images only
    same_evaluation(coco, results, iou_thrs=[0.5])  # the error breakdown's re-scoring
    assert same_evaluation(coco, [])["mAP"] == 0.0  # no detections


def test_backends_agree_on_a_multi_class_fixture(labelme):
    coco = load_coco(labelme / LABELME_COCO / "annotations.json")  # 3 photos, 6 of 21 classes
    for seed in range(3):  # wrong classes: detections of categories without ground truth
        same_evaluation(coco, jittered_results(coco, seed=seed, wrong_class=0.3))


def test_backends_agree_with_crowd_boxes_and_small_medium_large(tmp_path):
    coco = one_image_coco([(1, [10, 10, 20, 20]), (1, [50, 50, 60, 60]), (2, [0, 0, 150, 150]),
                           (2, [100, 100, 40, 40])], iscrowd=(4,))
    g = np.random.default_rng(0)
    results = [{"image_id": 1, "category_id": int(g.integers(1, 3)),
                "bbox": [float(v) for v in g.uniform(0, 100, 2).tolist() + g.uniform(5, 120, 2).tolist()],
                "score": float(g.uniform())} for _ in range(300)]  # past maxDets 100
    results += [{"image_id": 1, "category_id": 2, "bbox": [105, 98, 38, 44], "score": 0.95}]
    same_evaluation(coco, results)


def test_an_unknown_backend_is_named():
    coco = one_image_coco([(1, [10, 10, 20, 20])])
    with pytest.raises(ValueError, match="backend must be one of faster-coco-eval, pycocotools"):
        run_cocoeval(coco, [], backend="cocoapi")


# ---------------------------------------------------------------- per class


def check_per_class(coco: COCO, results: list[dict]) -> dict[int, dict[str, float]]:
    ev = run_cocoeval(coco, results)
    per_class = per_class_metrics(ev)
    assert sorted(per_class) == sorted(coco.getCatIds())
    with_gt = {a["category_id"] for a in coco.dataset["annotations"] if not a.get("iscrowd")}
    for cat, m in per_class.items():
        assert list(m) == list(PER_CLASS_STATS)
        expected = per_category_stats(coco, results, cat) if cat in with_gt else [-1.0] * 4
        np.testing.assert_allclose(list(m.values()), expected, rtol=0, atol=1e-6, err_msg=str(cat))
    # classes with ground truth all have every (T, R) entry: the mean of means is mAP
    stats, _ = summarize(ev)
    for name, stat in (("AP", "mAP"), ("AP_50", "mAP_50"), ("AP_75", "mAP_75")):
        mean = np.mean([per_class[c][name] for c in with_gt])
        assert mean == pytest.approx(stats[stat], abs=1e-9), name
    return per_class


def test_per_class_numbers_are_pycocotools_per_category_on_a_multi_class_fixture(labelme):
    coco = load_coco(labelme / LABELME_COCO / "annotations.json")  # 3 photos, 6 of 21 classes
    results = jittered_results(coco, seed=0, wrong_class=0.3)
    per_class = check_per_class(coco, results)
    aps = [m["AP"] for m in per_class.values() if m["AP"] > -1]
    assert len(aps) == 6 and len(set(aps)) >= 4 and max(aps) < 1  # not trivial
    # categories without ground truth that got (wrong-class) detections are still -1
    assert {r["category_id"] for r in results} - {a["category_id"] for a in coco.dataset["annotations"]}


def test_per_class_numbers_on_neon():
    coco = load_coco(ROOT / "data" / "neon_trees" / "annotations" / "val.json")  # 1 class
    per_class = check_per_class(coco, jittered_results(coco, seed=1, wrong_class=0.0))
    assert 0.2 < per_class[1]["AP"] < 0.9


def test_from_coco_results_inverts_to_coco_results():
    dets = [
        {"boxes": torch.tensor([[1.0, 2.0, 11.0, 22.0], [0.5, 0.0, 3.0, 4.5]]),
         "scores": torch.tensor([0.9, 0.25]), "labels": torch.tensor([1, 0]),
         "spread": torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.5, 0.5, 0.5, 0.5]])},
        {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0),
         "labels": torch.zeros(0, dtype=torch.long), "spread": torch.zeros(0, 4)},
    ]
    results = to_coco_results([7, 9], dets, cat_ids=[3, 5])
    assert results[0] == {"image_id": 7, "category_id": 5, "bbox": [1.0, 2.0, 10.0, 20.0],
                          "score": pytest.approx(0.9), "spread": [1.0, 2.0, 3.0, 4.0]}
    back = from_coco_results(results, [3, 5], [7, 9])
    for got, want in zip(back, dets):
        assert got.keys() == want.keys()
        for key in want:
            torch.testing.assert_close(got[key], want[key])


def test_results_coco_is_what_loadres_makes_of_boxes_but_the_polygons():
    coco = one_image_coco([(1, [10, 10, 20, 20]), (2, [50, 50, 60, 60])])
    results = [{"image_id": 1, "category_id": 2, "bbox": [48.0, 51.0, 60.0, 58.5], "score": 0.9},
               {"image_id": 1, "category_id": 1, "bbox": [9.5, 10.0, 20.0, 21.0], "score": 0.4}]
    before = [dict(r) for r in results]
    with contextlib.redirect_stdout(io.StringIO()):
        ours, theirs = results_coco(coco, results), coco.loadRes([dict(r) for r in results])
    assert results == before  # left as they were
    drop = {"segmentation"}
    assert {i: {k: v for k, v in a.items() if k not in drop} for i, a in theirs.anns.items()} \
        == ours.anns
    assert ours.imgs == theirs.imgs and ours.cats == theirs.cats
    with pytest.raises(ValueError, match="1 image id.*not in the ground truth, e.g. \\[7\\]"):
        results_coco(coco, [dict(results[0], image_id=7)])
