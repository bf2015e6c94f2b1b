"""retina.analysis.report: every file of the report from a results file and an annotation
file, on labelme's real multi-class photos (detections jittered from the ground truth)."""

import contextlib
import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.cocoeval import COCOeval

from retina.analysis.report import report_from_files, report_training_run, write_report
from retina.data.coco import load_coco
from retina.training.coco_eval import coco_evaluate
from tests.figures import lines_by_label, saved_figures
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
    with saved_figures() as figures:
        metrics = report_from_files(root / "annotations.json", out / "in.json", out / "report",
                                    images=root, score_thresh=0.2)
    return coco, results, out / "report", metrics, figures


def test_the_report_writes_every_file(report, labelme):
    coco, results, out, _, figures = report
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == sorted(FILES)
    drawn = sorted(p.name for p in (out / "worst_images").iterdir())
    assert sorted(figures) == sorted(["confusion_matrix.png", "errors.png", "pr_curves.png", *drawn])
    # the worst images: every image once, its boxes and detections (>= 0.2) counted
    md = (out / "worst_images.md").read_text()
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in md.splitlines()[4:]
            if line.startswith("|")]
    assert sorted(r[1] for r in rows) == sorted(im["file_name"] for im in coco.imgs.values())
    assert sum(int(r[2]) for r in rows) == len(coco.dataset["annotations"])
    assert sum(int(r[3]) for r in rows) == sum(r["score"] >= 0.2 for r in results)
    # each drawn: the photo itself on both sides; left a box per ground-truth box (the missed
    # red), right a box per detection (the false red)
    assert len(drawn) == 3 and all(f"[png](worst_images/{name})" in md for name in drawn)
    for row in rows:
        name = re.search(r"worst_images/([^)]+)", row[6]).group(1)
        left, right = figures[name].axes
        photo = np.asarray(Image.open(labelme / LABELME_COCO / row[1]).convert("RGB"))
        for ax in (left, right):
            np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()), photo)
        for ax, total, red in ((left, row[2], row[4]), (right, row[3], row[5])):
            colours = [p.get_edgecolor()[:3] for p in ax.patches]
            assert len(colours) == int(total) and colours.count((1.0, 0.0, 0.0)) == int(red)
    assert not (out / "uncertainty.md").exists()  # no spread in these detections


def test_the_pr_curves_are_pycocotools_precision(report):
    # pycocotools run here: precision[T, R, K, A, M] at IoU 0.5 and 0.75, all areas, 100 dets
    coco, results, _, _, figures = report
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(coco, coco.loadRes([dict(r) for r in results]), "bbox")
        ev.evaluate(), ev.accumulate()
    for ax, t in zip(figures["pr_curves.png"].axes, (0, 5)):  # IoU 0.5, 0.75
        lines = lines_by_label(ax)
        with_gt = [c for c in ev.params.catIds if coco.getAnnIds(catIds=[c])]
        assert len(lines) == len(with_gt)
        for c in with_gt:
            name = coco.cats[c]["name"]
            precision = ev.eval["precision"][t, :, ev.params.catIds.index(c), 0, 2]
            (label,) = [k for k in lines if k.startswith(f"{name} (AP ")]
            x, y = lines[label]
            np.testing.assert_allclose(x, np.linspace(0, 1, 101))
            np.testing.assert_allclose(y, precision, err_msg=name)
            assert label == f"{name} (AP {precision.mean():.3f})"


def test_the_numbers_are_pycocotools(report):
    coco, results, out, metrics, _ = report
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
    coco, _, out, metrics, figures = report
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
    # the figures show these numbers: the matrix's row shares, a bar per error type its gain
    matrix = np.array([[int(v) for v in r[1:]] for r in rows[1:]], dtype=float)
    sums = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, sums, out=np.zeros_like(matrix), where=sums > 0)
    image = figures["confusion_matrix.png"].axes[0].images[0]
    np.testing.assert_allclose(np.asarray(image.get_array()), shares)
    ax = figures["errors.png"].axes[0]
    bars = {t.get_text(): b.get_width() for t, b in zip(ax.get_yticklabels(), ax.patches)}
    assert bars == pytest.approx({k: v["mAP_50_gain"] for k, v in errors["types"].items()})
    md_rows = [line.strip("|").split("|") for line in (out / "errors.md").read_text().splitlines()
               if line.startswith("| ") and not line.startswith("| error")]
    assert {r[0].strip(): (int(r[1]), float(r[2])) for r in md_rows} == {
        k: (v["count"], pytest.approx(v["mAP_50_gain"], abs=5e-5)) for k, v in errors["types"].items()}


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
