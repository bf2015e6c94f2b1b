"""Checkpoints and exports written before the package's current layout still load.

``tests/fixtures/legacy/*.json`` hold what three real checkpoints of commit 9a6dd7e kept
besides the weight values (the code before ``retina.assign``/``retina.ops``/``retina.training``:
``retina.lit.DetectionModule``, ``model.anchors``, ``retina.matcher``, a coder in the loss):
their hyper-parameters and the name, shape and dtype of every tensor. Each test writes such
a checkpoint with seeded random weights and reads it through today's code paths.
"""

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import retina
from retina.data.coco import read_rgb
from retina.export.formats import export
from retina.export.meta import ExportMeta
from retina.export.predictor import from_checkpoint
from retina.export.runtimes import load
from retina.training.checkpoint import (
    load_checkpoint,
    module_from_checkpoint,
    run_config,
    upgrade_model_config,
)
from retina.training.run import evaluate

FIXTURES = Path(__file__).parent / "fixtures" / "legacy"
VAL_TILES = sorted((Path(__file__).resolve().parents[1] / "data/neon_trees/val").glob("*.png"))


def legacy_checkpoint(name: str, out: Path) -> Path:
    """A checkpoint with the old layout of ``fixtures/legacy/<name>.json``, random weights."""
    fixture = json.loads((FIXTURES / f"{name}.json").read_text())
    g = torch.Generator().manual_seed(0)
    state = {}
    for key, (shape, dtype) in fixture["state_dict"].items():
        dtype = getattr(torch, dtype)
        if dtype.is_floating_point:
            state[key] = torch.randn(shape, generator=g, dtype=dtype) * 0.01
            if key.endswith("running_var"):
                state[key] = state[key].abs() + 1.0  # a variance
        else:
            state[key] = torch.zeros(shape, dtype=dtype)
    path = out / f"{name}.ckpt"
    torch.save({"state_dict": state, "hyper_parameters": fixture["hyper_parameters"],
                "epoch": fixture["epoch"], "global_step": fixture["global_step"]}, path)
    return path


@pytest.mark.parametrize("name", ["gfl", "retinanet", "softmax_focal"])
def test_old_run_configs_are_read_in_todays_layout(name, tmp_path):
    old = json.loads(json.loads((FIXTURES / f"{name}.json").read_text())
                     ["hyper_parameters"]["run_config"])
    assert "anchors" in old["model"] and old["model"]["_target_"] == "retina.lit.DetectionModule"
    run = run_config(load_checkpoint(legacy_checkpoint(name, tmp_path)))
    assert run.model._target_ == "retina.training.module.DetectionModule"
    assert "anchors" not in run.model and run.model.detector.anchors == old["model"]["anchors"]
    assert run.model.coder == old["model"]["postprocess"]["coder"] | {
        "_target_": old["model"]["postprocess"]["coder"]["_target_"].replace(
            "retina.boxes.", "retina.ops.boxes.")}
    assert "num_anchors" not in run.model.detector.head and run.model.detector.head._partial_
    assert "coder" not in run.model.criterion and "matcher" not in run.model.criterion
    assert run.model.criterion.assigner._target_.startswith("retina.assign.")
    # today's layout comes back unchanged
    today = OmegaConf.to_container(run.model)
    assert upgrade_model_config(today) == today


@pytest.mark.parametrize("name", ["gfl", "retinanet", "softmax_focal"])
def test_old_checkpoints_rebuild_with_every_weight(name, tmp_path):
    path = legacy_checkpoint(name, tmp_path)
    module = module_from_checkpoint(path)  # load_state_dict is strict: every key fits
    saved = torch.load(path, weights_only=True)["state_dict"]
    for key, value in module.state_dict().items():
        assert torch.equal(value, saved[key]), key
    expected = {"gfl": "GFLCriterion", "retinanet": "RetinaNetCriterion",
                "softmax_focal": "SoftmaxFocalCriterion"}[name]
    assert type(module.criterion).__name__ == expected
    assert module.detector.head.num_anchors == module.detector.anchors.num_anchors


def test_checkpoints_with_float64_nms_rebuild(tmp_path):
    # checkpoints and exports written while the NMS had a float64 switch (it is exact now)
    path = legacy_checkpoint("retinanet", tmp_path)
    ckpt = load_checkpoint(path)
    run = run_config(ckpt)
    run.model.postprocess.float64_nms = True
    ckpt["hyper_parameters"]["run_config"] = json.dumps(OmegaConf.to_container(run))
    assert "float64_nms" not in run_config(ckpt).model.postprocess
    assert module_from_checkpoint(ckpt).postprocess.nms_thresh == run.model.postprocess.nms_thresh


def test_old_checkpoint_evaluates(tmp_path, tiny_cfg):
    path = legacy_checkpoint("retinanet", tmp_path)
    metrics = evaluate(tiny_cfg(f"ckpt_path={path}", "accelerator=cpu", name="eval"))
    assert {"val/mAP", "val/mAP_50", "val/AR_100"} <= set(metrics)


@pytest.mark.parametrize("name", ["gfl", "retinanet"])
def test_old_checkpoint_exports_and_loads(name, tmp_path):
    path = legacy_checkpoint(name, tmp_path)
    images = [read_rgb(p) for p in VAL_TILES[:2]]
    eager = from_checkpoint(path).set_postprocess(score_thresh=0.0)
    expected = eager(images)
    assert all(len(d["boxes"]) > 0 for d in expected)
    by_load = retina.load(path).set_postprocess(score_thresh=0.0)(images)
    exported = load(export(eager, "safetensors", tmp_path / f"{name}.safetensors"))(images)
    for got in (by_load, exported):
        for a, b in zip(got, expected):
            assert a.keys() == b.keys()
            for field in a:
                torch.testing.assert_close(a[field], b[field])


def test_old_export_metadata_is_upgraded(tmp_path):
    path = legacy_checkpoint("gfl", tmp_path)
    meta = from_checkpoint(path).meta
    old = json.loads(meta.to_json())
    old["format_version"] = 1
    legacy_model = json.loads(json.loads((FIXTURES / "gfl.json").read_text())
                              ["hyper_parameters"]["run_config"])["model"]
    legacy_model["detector"]["backbone"]["weights"] = None  # as every export writes it
    old["model"] = {part: legacy_model[part] for part in ("detector", "anchors", "postprocess")}
    read = ExportMeta.from_json(json.dumps(old), "old.json")
    assert read.model == meta.model
