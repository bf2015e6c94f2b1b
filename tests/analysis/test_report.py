"""retina.analysis.report: every file of the report from a results file and an annotation
file, on labelme's real multi-class photos (detections jittered from the ground truth)."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from retina.analysis.report import report_from_files, report_training_run, write_report
from retina.data.coco import load_coco
from retina.training.coco_eval import coco_evaluate
from tests.helpers import LABELME_COCO, jittered_results, per_category_stats

FILES = ["metrics.json", "results.json", "per_class.csv", "per_class.md", "pr_curves.png",
         "confusion_matrix.png", "confusion_matrix.csv", "confusion_matrix_normalised.csv",
         "errors.md", "errors.png", "worst_images.md"]


@pytest.fixture(scope="module")
def report(labelme, tmp_path_factory):
    root = labelme / LABELME_COCO  # 3 photos, 12 boxes of 6 of its 21 classes
    coco = load_coco(root / "annotations.json")
    results = jittered_results(coco, seed=3, wrong_class=0.25)
    out = tmp_path_factory.mktemp("report")
    (out / "in.json").write_text(json.dumps(results))
    metrics = report_from_files(root / "annotations.json", out / "in.json", out / "report",
                                images=root, score_thresh=0.2)
    return coco, results, out / "report", metrics


def test_the_report_writes_every_file(report):
    _, _, out, _ = report
    for name in FILES:
        assert (out / name).stat().st_size > 100, name
    drawn = sorted(p.name for p in (out / "worst_images").iterdir())
    assert len(drawn) == 3 and all(f"[png](worst_images/{name})" in (out / "worst_images.md").read_text()
                                   for name in drawn)
    assert not (out / "uncertainty.md").exists()  # no spread in these detections


def test_the_numbers_are_pycocotools(report):
    coco, results, out, metrics = report
    stats, _ = coco_evaluate(coco, results, backend="pycocotools")  # the report's evaluator
    assert {k: metrics[k] for k in stats} == stats
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert json.loads((out / "results.json").read_text()) == results
    with_gt = {a["category_id"] for a in coco.dataset["annotations"]}
    per_class = metrics["per_class"]
    assert {v["category_id"] for v in per_class.values() if v["AP"] > -1} == with_gt
    for name, row in per_class.items():
        if row["AP"] > -1:
            expected = per_category_stats(coco, results, row["category_id"])
            np.testing.assert_allclose([row[k] for k in ("AP", "AP_50", "AP_75", "AR_100")],
                                       expected, rtol=0, atol=1e-6, err_msg=name)
        assert row["num_gt"] == sum(a["category_id"] == row["category_id"]
                                    for a in coco.dataset["annotations"])
        assert row["num_det"] == sum(r["category_id"] == row["category_id"] for r in results)
    assert np.mean([v["AP"] for v in per_class.values() if v["AP"] > -1]) == pytest.approx(
        metrics["mAP"], abs=1e-9)
    # the table is sorted, best AP first, classes without ground truth last
    rows = list(csv.DictReader(open(out / "per_class.csv")))
    aps = [float(r["AP"]) for r in rows]
    assert aps == sorted(aps, key=lambda ap: (ap == -1, -ap)) and -1 in aps


def test_the_error_breakdown_and_confusion_add_up(report):
    coco, _, out, metrics = report
    errors = metrics["errors"]
    assert errors["mAP_50"] == metrics["mAP_50"]
    assert errors["mAP_50_all_fixed"] == pytest.approx(1.0, abs=1e-12)
    assert sum(v["mAP_50_gain"] for v in errors["types"].values()) > 0
    assert "| error | count | mAP_50 gain |" in (out / "errors.md").read_text()
    # every ground-truth box is in its true class's row once: matched or missed
    rows = list(csv.reader(open(out / "confusion_matrix.csv")))
    names = rows[0][1:]
    # the 6 classes with boxes, bird and potted plant (wrong-class detections), background
    assert names == ["bird", "bottle", "bus", "car", "chair", "person", "potted plant", "sofa",
                     "background"]
    counts = {r[0]: sum(map(int, r[1:])) for r in rows[1:]}
    for cat in coco.cats.values():
        assert counts.get(cat["name"], 0) == len(coco.getAnnIds(catIds=[cat["id"]])), cat["name"]


def test_no_detections_still_make_a_report(labelme, tmp_path):
    coco = load_coco(labelme / LABELME_COCO / "annotations.json")
    metrics = write_report(coco, [], tmp_path)
    assert metrics["mAP"] == 0.0 and metrics["num_detections"] == 0
    errors = metrics["errors"]
    assert errors["types"]["missed"]["count"] == 12
    # every box missed: fixing that leaves nothing to score, so no number rather than -1
    assert errors["types"]["missed"]["mAP_50_gain"] is None and errors["mAP_50_all_fixed"] is None
    assert errors["types"]["background"]["mAP_50_gain"] == 0.0
    assert "| missed | 12 | n/a |" in (tmp_path / "errors.md").read_text()
    assert all((tmp_path / name).is_file() for name in FILES)


def test_a_training_run_reports_its_best_checkpoint_unless_told_not_to(tiny_cfg):
    # the report itself after `python -m retina.train`: tests/e2e/test_train.py
    cfg = tiny_cfg()
    best = Path(cfg.callbacks.model_checkpoint.dirpath) / "best.ckpt"
    assert report_training_run(cfg) is None  # nothing saved (yet)
    best.parent.mkdir(parents=True)
    best.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="best.ckpt is not a loadable PyTorch checkpoint"):
        report_training_run(cfg)  # it reads best.ckpt
    assert report_training_run(tiny_cfg("~report")) is None  # told not to
    assert report_training_run(tiny_cfg("callbacks.model_checkpoint=null")) is None  # none kept
