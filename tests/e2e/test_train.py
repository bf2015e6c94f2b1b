"""End-to-end runs of the real composed config on real NEON tiles, shrunk: train, evaluate,
resume, and the same from the command line."""

import copy
import csv
import json
import os
import subprocess
import sys

import pytest
import torch

from retina.training.checkpoint import load_checkpoint
from retina.training.config import ROOT
from retina.training.module import DetectionModule
from retina.training.run import train
from tests.figures import lines_by_label, saved_figures
from tests.helpers import TINY, TRAINED, evaluated

SHORT = [
    "trainer.max_epochs=1", "trainer.limit_train_batches=2", "callbacks.lr_monitor=null",
    "trainer.check_val_every_n_epoch=1", "trainer.log_every_n_steps=1",
]


@pytest.mark.parametrize("experiment", [None, "neon_retinanet"])  # None: the default (GFL)
def test_fast_dev_run_writes_metrics(tiny_cfg, tmp_path, experiment):
    metrics = train(tiny_cfg("debug=fdr", *([f"experiment={experiment}"] if experiment else [])))
    assert {"val/mAP", "val/mAP_50", "val/mAP_75", "val/AR_100", "val/mAP_small"} <= set(metrics)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == metrics
    assert metrics["val/AP/Tree"] == pytest.approx(metrics["val/mAP"], abs=1e-6)  # one class


def test_resume_and_eval_reproduce_training(tiny_cfg, tmp_path, monkeypatch):
    # RetinaNet at 160 px with a low threshold: its untrained boxes are near the anchors and
    # some match trees, so the numbers compared below are not 0 == 0
    recipe = ("experiment=neon_retinanet", *TRAINED)
    with saved_figures() as figures:
        first = train(tiny_cfg(*recipe))
    assert first["stopped_early"] is False and first["epochs_planned"] == first["epoch"] == 1
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    saved = load_checkpoint(str(ckpt))
    assert saved["global_step"] == first["global_step"] == 2
    assert saved["hyper_parameters"]["class_names"] == ["Tree"]
    # training.png: the logged losses of both steps and the validation numbers, as logged
    rows = list(csv.DictReader(open(tmp_path / "run/csv/version_0/metrics.csv")))
    logged = {k: [(int(r["step"]), float(r[k])) for r in rows if r.get(k)]
              for k in ("train/loss", "train/loss_cls", "train/loss_box", "val/mAP_50")}
    assert [s for s, _ in logged["train/loss"]] == [0, 1]
    loss_ax, map_ax = figures["training.png"].axes
    curves = lines_by_label(loss_ax)
    for key in ("train/loss", "train/loss_cls", "train/loss_box"):
        x, y = curves[key.split("/")[1]]
        assert x == [s for s, _ in logged[key]] and y == pytest.approx([v for _, v in logged[key]])
    x, y = lines_by_label(map_ax)["mAP_50"]
    assert y == pytest.approx([first["val/mAP_50"]]) and [v for _, v in logged["val/mAP_50"]] == y

    # eval on the checkpoint gives the numbers written at the end of training
    metrics = evaluated(ckpt)
    assert first["val/AR_100"] > 0
    for key in ("val/mAP", "val/mAP_50", "val/AR_100"):
        assert metrics[key] == pytest.approx(first[key], abs=1e-9), key

    # resuming continues at the saved step and epoch, with the weights, the optimizer, the
    # schedule and the EMA of the weights as they were saved
    seen = {}

    def on_train_start(self):
        ema = next(c for c in self.trainer.callbacks if type(c).__name__ == "WeightAveraging")
        seen["weights"] = {k: v.clone() for k, v in self.state_dict().items()}
        seen["average"] = {k: v.clone() for k, v in ema._average_model.module.state_dict().items()}
        # copies: the optimizer updates its state tensors in place as training goes on
        seen["optimizer"] = copy.deepcopy(self.trainer.optimizers[0].state_dict())
        seen["schedule"] = copy.deepcopy(self.trainer.lr_scheduler_configs[0].scheduler.state_dict())

    monkeypatch.setattr(DetectionModule, "on_train_start", on_train_start, raising=False)
    second = train(tiny_cfg(*recipe, "trainer.max_epochs=2", f"ckpt_path={ckpt}"))
    assert second["global_step"] == 4 and second["epoch"] == 2
    live, averaged = saved["current_model_state"], saved["state_dict"]
    assert any(not torch.equal(live[k], averaged[k]) for k in live)  # two different states
    for key, value in seen["weights"].items():
        assert torch.equal(value, live[key]), key
    for key, value in seen["average"].items():
        assert torch.equal(value, averaged[key]), key
    saved_opt = saved["optimizer_states"][0]["state"]
    assert seen["optimizer"]["state"].keys() == saved_opt.keys() and len(saved_opt) > 0
    for i, state in saved_opt.items():
        for name, value in state.items():
            assert torch.equal(torch.as_tensor(seen["optimizer"]["state"][i][name]),
                               torch.as_tensor(value)), (i, name)
    assert seen["schedule"]["last_epoch"] == saved["lr_schedulers"][0]["last_epoch"] == 2


@pytest.mark.slow
def test_command_line_train_then_eval(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "retina.train", *TINY, *SHORT, f"paths.log_dir={tmp_path}",
         "hydra.run.dir=" + str(tmp_path / "run")],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    # the report of best.ckpt (the one epoch) is written at the end of training
    report = json.loads((tmp_path / "run" / "report" / "metrics.json").read_text())
    assert report["mAP"] == pytest.approx(metrics["val/mAP"], abs=1e-12)
    # errors.md: its headline is the validation's mAP_50, a row per TIDE type as in metrics.json
    errors_md = (tmp_path / "run" / "report" / "errors.md").read_text()
    assert f"mAP_50 **{metrics['val/mAP_50']:.4f}**" in errors_md
    rows = [line.strip("|").split("|") for line in errors_md.splitlines()
            if line.startswith("| ") and not line.startswith("| error")]
    assert {r[0].strip(): int(r[1]) for r in rows} == {
        k: v["count"] for k, v in report["errors"]["types"].items()}
    n_gt = len(json.loads((ROOT / "data/neon_trees/annotations/val.json").read_text())["annotations"])
    assert 0 < report["errors"]["types"]["missed"]["count"] <= n_gt
    ev = subprocess.run(
        [sys.executable, "-m", "retina.eval", f"model={tmp_path / 'run/checkpoints/best.ckpt'}",
         "device=cpu", f"out={tmp_path / 'eval'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert ev.returncode == 0, ev.stderr[-3000:]
    assert "Average Precision  (AP) @[ IoU=0.50:0.95" in ev.stdout + ev.stderr
    evaluated_metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert evaluated_metrics["mAP"] == pytest.approx(metrics["val/mAP"], abs=1e-12)
    # each numbers file says which weights it describes
    assert evaluated_metrics["source"]["checkpoint"].endswith("best.ckpt")
    assert report["source"]["epoch"] == evaluated_metrics["source"]["epoch"] == metrics["epoch"] == 1
    assert "checkpoints/last.ckpt (epoch 1" in metrics["weights"]


def test_a_run_cut_by_max_steps_validates_the_weights_it_saves_and_says_so(tiny_cfg, tmp_path):
    # neon_retinanet plans 30 epochs of 20 steps, validating every 5: 3 steps end it before
    # any validation, and the numbers are still those of the weights it ends with
    metrics = train(tiny_cfg("experiment=neon_retinanet", "trainer.max_steps=3",
                             "data.size=160", "model.postprocess.score_thresh=0.005"))
    assert metrics["stopped_early"] is True and metrics["epochs_planned"] == 30
    assert (metrics["epoch"], metrics["global_step"]) == (1, 3)  # Lightning counts the cut epoch
    assert metrics["val/AR_100"] > 0
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == metrics
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert load_checkpoint(ckpt)["global_step"] == 3
    again = evaluated(ckpt)
    for key in ("val/mAP", "val/mAP_50", "val/AR_100"):
        assert again[key] == pytest.approx(metrics[key], abs=1e-9), key


def test_a_run_cut_by_max_time_says_stopped_early(tiny_cfg, tmp_path):
    # max_time is a user's option only: reached, the run still validates and says so
    metrics = train(tiny_cfg("trainer.max_epochs=1000", "trainer.max_time=00:00:00:01",
                             "trainer.check_val_every_n_epoch=1000"))
    assert metrics["stopped_early"] is True and metrics["epochs_planned"] == 1000
    assert 0 < metrics["epoch"] < 1000 and "val/mAP" in metrics
    assert metrics["train_seconds"] >= 1


def test_the_progress_bar_counts_epochs_and_estimates_the_run(tiny_cfg, tmp_path, capsys, caplog):
    cfg = tiny_cfg("trainer.max_epochs=2", "trainer.limit_train_batches=3",
                   "trainer.enable_progress_bar=true", "trainer.check_val_every_n_epoch=2")
    with caplog.at_level("INFO"):
        train(cfg)
    bar = "".join(capsys.readouterr())
    assert "Epoch 2/2" in bar and "eta=" in bar
    # 6 steps; measured over steps 2-4 (the first also pays for start-up), 2 left
    assert "expected duration" in caplog.text and "for 2 steps at" in caplog.text


def test_early_stopping_ends_the_run_and_says_so(tiny_cfg, tmp_path, caplog):
    # min_delta 1: no validation after the first counts as an improvement of val/mAP, so
    # patience 1 stops the run at the second validation, epoch 2 of 6
    with caplog.at_level("WARNING", logger="retina.training.run"):
        metrics = train(tiny_cfg("experiment=neon_retinanet", *TRAINED, "trainer.max_epochs=6",
                                 "early_stop.patience=1", "early_stop.min_delta=1.0"))
    assert (metrics["epoch"], metrics["epochs_planned"]) == (2, 6)
    assert metrics["stopped_early"] is True and metrics["stop_reason"] == "early_stop"
    assert "EARLY STOPPING after 2 of 6 planned epochs: val/mAP did not improve" in caplog.text
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["stop_reason"] == (
        "early_stop")
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")["epoch"] == 1  # 0-based
    # without a patience the same recipe runs to its end
    assert train(tiny_cfg("experiment=neon_retinanet", *TRAINED))["stop_reason"] == "recipe"


def test_a_run_that_fails_on_a_bad_image_is_one_line_and_leaves_nothing(tmp_path):
    # a COCO set whose one image is cut in half: found when the data is set up
    from tests.helpers import truncate

    data = tmp_path / "mydata"
    (data / "images").mkdir(parents=True)
    tile = sorted((ROOT / "data/neon_trees/val").glob("*.png"))[0]
    (data / "images" / "a.png").write_bytes(tile.read_bytes())
    truncate(data / "images" / "a.png")
    coco = {"images": [{"id": 1, "file_name": "a.png", "height": 400, "width": 400}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 40],
                             "area": 1600, "iscrowd": 0}],
            "categories": [{"id": 1, "name": "Tree"}]}
    (data / "ann.json").write_text(json.dumps(coco))
    work = tmp_path / "work"
    work.mkdir()
    run = subprocess.run(
        [sys.executable, "-m", "retina", "train", "data=coco", f"data.train_ann={data / 'ann.json'}",
         f"data.train_images={data / 'images'}", f"data.val_ann={data / 'ann.json'}",
         f"data.val_images={data / 'images'}", "trainer.max_epochs=1", "model.detector.backbone.weights=null", "data.num_workers=0"],
        cwd=work, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 2, run.stderr[-2000:]
    errors = [ln for ln in run.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "a.png" in errors[0], run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    assert list(work.iterdir()) == []  # no outputs/ folder, no data/cache
