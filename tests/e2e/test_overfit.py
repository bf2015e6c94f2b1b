"""``debug=overfit``: one batch, learnt by heart. Every step sees the same pixels and boxes (the
experiments' augmentations off), and the loss the CSV logger wrote falls far below its first
value."""

import csv

import pytest
import torch

from retina.training.module import DetectionModule
from retina.training.run import train


def test_debug_overfit_memorises_one_batch(tiny_cfg, tmp_path, monkeypatch):
    seen = []
    training_step = DetectionModule.training_step

    def record(self, batch, batch_idx):
        seen.append((batch["image_ids"].tolist(), batch["images"].clone(), batch["boxes"].clone()))
        return training_step(self, batch, batch_idx)

    monkeypatch.setattr(DetectionModule, "training_step", record)
    cfg = tiny_cfg("debug=overfit", "experiment=neon_retinanet", "trainer.max_epochs=30",
                   "trainer.check_val_every_n_epoch=30", "trainer.log_every_n_steps=1",
                   "callbacks.lr_monitor=null")
    assert cfg.trainer.overfit_batches == 1
    metrics = train(cfg)
    assert metrics["global_step"] == 30 and len(seen) == 30
    ids, images, boxes = seen[0]
    for step, (i, im, b) in enumerate(seen):  # the same batch every step, not augmented anew
        assert i == ids and torch.equal(im, images) and torch.equal(b, boxes), step
    rows = list(csv.DictReader(open(tmp_path / "run/csv/version_0/metrics.csv")))
    loss = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(loss) == 30
    assert min(loss[-5:]) < 0.3 * loss[0], loss
    assert loss[-1] == pytest.approx(min(loss), rel=0.5)  # still going down at the end
