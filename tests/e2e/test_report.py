"""The evaluation report end to end: ``python -m retina.eval`` on a tiny GFL model trained two
steps on real NEON tiles, the same report from its results file alone
(``python -m retina.eval.report``), and a bad results file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from retina.data.coco import load_coco
from retina.training.config import ROOT, compose_run
from retina.training.run import train
from tests.helpers import TINY, per_category_stats

NEON = ROOT / "data" / "neon_trees"
VAL_ANN = NEON / "annotations" / "val.json"
SHORT = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "callbacks.lr_monitor=null",
         "trainer.check_val_every_n_epoch=1"]
# two steps leave scores near the prior: low thresholds keep detections to look at
LOW = ["model.postprocess.score_thresh=0.005", "data.size=160"]
REPORT = "report.score_thresh=0.01"
FILES = ["metrics.json", "results.json", "per_class.csv", "per_class.md", "pr_curves.png",
         "confusion_matrix.png", "confusion_matrix.csv", "confusion_matrix_normalised.csv",
         "errors.md", "errors.png", "worst_images.md", "uncertainty.md"]


@pytest.fixture(scope="module")
def gfl(tmp_path_factory) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("gfl")
    metrics = train(compose_run([*TINY, *SHORT, *LOW, "experiment=neon_gfl"], tmp / "run"))
    return tmp / "run" / "checkpoints" / "last.ckpt", metrics


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def evaluated(gfl, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("eval") / "report"
    done = run("retina.eval", f"model={gfl[0]}", "device=cpu", f"out={out}", REPORT)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_eval_writes_every_file_of_the_report(gfl, evaluated):
    for name in FILES:
        assert (evaluated / name).stat().st_size > 50, name
    drawn = sorted((evaluated / "worst_images").glob("*.jpg"))
    assert len(drawn) == 10 and all(p.stat().st_size > 10_000 for p in drawn)
    metrics = json.loads((evaluated / "metrics.json").read_text())
    # the numbers of the validation at the end of training, per class too (one class: Tree)
    assert metrics["mAP"] == pytest.approx(gfl[1]["val/mAP"], abs=1e-12)
    tree = metrics["per_class"]["Tree"]
    assert tree["AP"] == pytest.approx(metrics["mAP"], abs=1e-12) and tree["num_gt"] == 374
    results = json.loads((evaluated / "results.json").read_text())
    assert len(results) == metrics["num_detections"] == tree["num_det"] > 0
    assert all(len(r["spread"]) == 4 for r in results)  # GFL: the box distributions' widths
    np.testing.assert_allclose([tree[k] for k in ("AP", "AP_50", "AP_75", "AR_100")],
                               per_category_stats(load_coco(VAL_ANN), results, 1), atol=1e-6)
    # two steps may find no tree yet (mAP 0 at 160 px): then no true positive and no
    # correlation (null, not NaN); the numbers are tested in tests/analysis/test_uncertainty*.py
    uncertainty = metrics["uncertainty"]
    assert (uncertainty["num_matched"] > 0) == (metrics["AR_100"] > 0)
    if uncertainty["num_matched"] < 2:
        assert uncertainty["spearman"] is None
    else:
        assert -1 <= uncertainty["spearman"] <= 1
    rows = [ln for ln in (evaluated / "uncertainty.md").read_text().splitlines()
            if ln.startswith("| ") and ln[2].isdigit()]
    assert len(rows) == min(20, sum(r["score"] >= 0.01 for r in results))  # the widest, listed


def test_the_same_report_from_the_results_file_alone(evaluated, tmp_path):
    done = run("retina.eval.report", f"ann={VAL_ANN}", f"results={evaluated / 'results.json'}",
               f"out={tmp_path}", REPORT)
    assert done.returncode == 0, done.stderr[-3000:]
    from_file = json.loads((tmp_path / "metrics.json").read_text())
    from_model = json.loads((evaluated / "metrics.json").read_text())
    assert from_model.pop("source")["checkpoint"].endswith("last.ckpt")  # a model was scored
    assert from_file == from_model
    assert (tmp_path / "per_class.csv").read_text() == (evaluated / "per_class.csv").read_text()


def test_a_bad_results_file_is_one_line_naming_the_entry(evaluated, tmp_path):
    # every kind of bad entry: tests/analysis/test_results.py; here the command's answer
    results = json.loads((evaluated / "results.json").read_text())[:3]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([*results, {**results[0], "image_id": 12345}]))
    done = run("retina.eval.report", f"ann={VAL_ANN}", f"results={bad}", f"out={tmp_path / 'out'}")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: {bad} entry 3: unknown image_id 12345 (not an image of the annotation file)")
    assert "Traceback" not in done.stderr and "pycocotools" not in done.stderr


def test_eval_scores_more_detections_per_image_when_asked(trained_retinanet, tmp_path):
    retinanet_ckpt = trained_retinanet.ckpt
    out = tmp_path / "scene"
    done = run("retina.eval", f"model={retinanet_ckpt}", "device=cpu", f"out={out}",
               "max_det=300")
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["max_dets"] == 300 and metrics["num_detections"] > 100 * metrics["num_images"]
    assert metrics["AR_300"] >= metrics["AR_100"] and metrics["AR_300"] > 0
    assert {"mAP_300", "mAP_50_300"} <= set(metrics)
    assert metrics["source"]["checkpoint"] == str(retinanet_ckpt)
