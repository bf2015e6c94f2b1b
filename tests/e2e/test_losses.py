"""Every loss trains a fast_dev_run on real NEON tiles (one image without boxes); a softmax
checkpoint is evaluated but not exported."""

import json
import math

import pytest

from retina.export.meta import meta_from_checkpoint
from retina.training.checkpoint import load_checkpoint
from retina.training.config import ROOT
from retina.training.run import train
from tests.helpers import evaluated


def test_fast_dev_run_gfl(tiny_cfg):
    metrics = train(tiny_cfg("debug=fdr", "model=gfl"))
    assert {"val/mAP", "val/mAP_50", "val/AR_100"} <= set(metrics)


def one_empty_image_train_split(tmp_path):
    """Two NEON training tiles, the second with its boxes removed (one batch of 2)."""
    coco = json.loads((ROOT / "data/neon_trees/annotations/train.json").read_text())
    first, second = sorted(im["id"] for im in coco["images"])[:2]
    coco["images"] = [im for im in coco["images"] if im["id"] in (first, second)]
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] == first]
    path = tmp_path / "train_one_empty.json"
    path.write_text(json.dumps(coco))
    return path


@pytest.mark.parametrize("loss", ["focal", "softmax_focal", "ohem", "ghm"])
def test_each_loss_trains_a_fast_dev_run_with_an_image_without_boxes(tiny_cfg, tmp_path, loss):
    ann = one_empty_image_train_split(tmp_path)
    extra = ["loss.class_weights=inverse"] if "focal" in loss else []
    cfg = tiny_cfg("experiment=neon_retinanet", f"loss={loss}", "debug=fdr", *extra,
                   f"data.train_ann={ann}", "model.detector.backbone.weights=null",
                   "model.postprocess.score_thresh=0.001")  # scores start near the prior 0.01
    metrics = train(cfg)
    assert math.isfinite(metrics["val/mAP"]) and metrics["val/AR_100"] > 0  # it detects


def test_softmax_checkpoint_is_evaluated_and_exported(tiny_cfg, tmp_path):
    cfg = tiny_cfg("experiment=neon_retinanet", "loss=ohem", "trainer.max_epochs=1",
                   "trainer.limit_train_batches=1", "trainer.check_val_every_n_epoch=1",
                   "callbacks.lr_monitor=null",
                   "model.detector.backbone.weights=null", "model.postprocess.score_thresh=0.001")
    trained = train(cfg)
    path = tmp_path / "run" / "checkpoints" / "last.ckpt"
    ckpt = load_checkpoint(path)
    assert ckpt["state_dict"]["detector.head.cls_pred.bias"].numel() == 3 * 2  # A (K + 1)
    assert meta_from_checkpoint(ckpt, path).num_classes == 1  # exports like any (infer/)
    metrics = evaluated(path)
    assert metrics["val/AR_100"] > 0  # the softmax's foreground probabilities became detections
    for key in ("val/mAP", "val/mAP_50", "val/AR_100"):  # the rebuilt model is the trained one
        assert metrics[key] == pytest.approx(trained[key], abs=1e-9), key
