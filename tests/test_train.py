"""End-to-end runs of the real composed config on real NEON tiles, shrunk."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from retina.training.checkpoint import load_checkpoint
from retina.training.coco_eval import coco_evaluate
from retina.training.config import ROOT
from retina.training.run import evaluate, train

SHORT = [
    "trainer.max_epochs=1", "trainer.limit_train_batches=2", "callbacks.lr_monitor=null",
    "trainer.check_val_every_n_epoch=1", "trainer.log_every_n_steps=1",
]


@pytest.mark.parametrize("experiment", [None, "neon_retinanet"])  # None: the default (GFL)
def test_fast_dev_run_writes_metrics(tiny_cfg, tmp_path, experiment):
    metrics = train(tiny_cfg("debug=fdr", *([f"experiment={experiment}"] if experiment else [])))
    assert {"val/mAP", "val/mAP_50", "val/mAP_75", "val/AR_100", "val/mAP_small"} <= set(metrics)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == metrics


def test_resume_and_eval_reproduce_training(tiny_cfg, tmp_path):
    first = train(tiny_cfg(*SHORT))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    saved = load_checkpoint(str(ckpt))
    assert saved["global_step"] == first["global_step"] == 2
    assert saved["hyper_parameters"]["class_names"] == ["Tree"]
    assert (tmp_path / "run" / "training.png").stat().st_size > 10_000  # loss + mAP curves

    # eval on the checkpoint gives the numbers written at the end of training
    metrics = evaluate(tiny_cfg(f"ckpt_path={ckpt}", "accelerator=cpu", name="eval"))
    for key in ("val/mAP", "val/mAP_50", "val/AR_100"):
        assert metrics[key] == pytest.approx(first[key], abs=1e-9), key

    # resuming continues at the saved step and epoch, with the optimizer state
    second = train(tiny_cfg(*SHORT, "trainer.max_epochs=2", f"ckpt_path={ckpt}"))
    assert second["global_step"] == 4 and second["epoch"] == 2


def test_coco_numbers_equal_pycocotools_run_directly(tmp_path):
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
    ours, _ = coco_evaluate(COCO(str(path)), [dict(d) for d in dets])
    gt_coco = COCO(str(path))
    ev = COCOeval(gt_coco, gt_coco.loadRes([dict(d) for d in dets]), "bbox")
    ev.evaluate(), ev.accumulate(), ev.summarize()
    assert list(ours.values()) == [float(s) for s in ev.stats]
    assert ours["mAP"] > 0


@pytest.mark.slow
def test_command_line_train_then_eval(tmp_path):
    from conftest import TINY

    run = subprocess.run(
        [sys.executable, "-m", "retina.train", *TINY, *SHORT, f"paths.log_dir={tmp_path}",
         "hydra.run.dir=" + str(tmp_path / "run")],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    ev = subprocess.run(
        [sys.executable, "-m", "retina.eval", f"ckpt_path={tmp_path / 'run/checkpoints/best.ckpt'}",
         "accelerator=cpu", f"paths.log_dir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert ev.returncode == 0, ev.stderr[-3000:]
    assert "Average Precision  (AP) @[ IoU=0.50:0.95" in ev.stdout
    assert f'"val/mAP": {metrics["val/mAP"]}' in ev.stdout or metrics["val/mAP"] == pytest.approx(
        json.loads(ev.stdout[ev.stdout.index("{"):])["val/mAP"])


def test_bad_checkpoint_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "x.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="x.ckpt is not a loadable"):
        load_checkpoint(str(bad))
    torch.save({"foo": 1}, tmp_path / "y.ckpt")
    with pytest.raises(ValueError, match="not a retina training checkpoint"):
        load_checkpoint(str(tmp_path / "y.ckpt"))
