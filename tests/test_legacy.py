"""Checkpoints and exports of every earlier schema version load and detect what today's files of
the same weights detect (``retina.schema``).

``tests/fixtures/legacy/`` holds what real files kept besides the weight values:

- ``v1_*.json``: three checkpoints of commit 9a6dd7e (schema 1: ``retina.lit.DetectionModule``,
  ``model.anchors``, ``retina.matcher``, a coder in the loss);
- ``v2_*.json``: three checkpoints of commit e233523 (2026-12-07, schema 2: import paths of
  the layout of 2026-12-01; 1-step runs of ``retina train`` with ``experiment=neon_gfl``,
  ``neon_retinanet`` and ``neon_retinanet loss=softmax_focal``);
- ``v2_*.export.json``: the safetensors sidecars (format 2) that e233523 wrote for the seeded
  v2 checkpoints (the sha256 dropped: the weights are regenerated here).

Each checkpoint fixture stores its hyper-parameters and the name, shape and dtype of every
tensor; the tests write it back with seeded random weights and read it through today's code.
The detections of these files were compared with those of e233523 on the same machine
(2026-12-07): bit-identical for every fixture, through validation, the Predictor and the
safetensors export.
"""

import importlib.metadata
import json
import re
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import retina
from retina.data.coco import read_rgb
from retina.export.formats import export
from retina.export.meta import ExportMeta
from retina.infer.predictor import from_checkpoint
from retina.infer.runtimes import load
from retina.schema import SCHEMA_VERSION, load_model_config
from retina.training.checkpoint import load_checkpoint, module_from_checkpoint, run_config
from tests.helpers import evaluated

FIXTURES = Path(__file__).parent / "fixtures" / "legacy"
VAL_TILES = sorted((Path(__file__).resolve().parents[1] / "data/neon_trees/val").glob("*.png"))
V1 = ["v1_gfl", "v1_retinanet", "v1_softmax_focal"]
V2 = ["v2_gfl", "v2_retinanet", "v2_softmax_focal"]
CRITERION = {"gfl": "GFLCriterion", "retinanet": "RetinaNetCriterion",
             "softmax_focal": "SoftmaxFocalCriterion"}


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def seeded_state(name: str) -> dict[str, torch.Tensor]:
    """The state dict of fixture ``name`` with seeded random values."""
    g = torch.Generator().manual_seed(0)
    state = {}
    for key, (shape, dtype) in fixture(name)["state_dict"].items():
        dtype = getattr(torch, dtype)
        if dtype.is_floating_point:
            state[key] = torch.randn(shape, generator=g, dtype=dtype) * 0.01
            if key.endswith("running_var"):
                state[key] = state[key].abs() + 1.0  # a variance
        else:
            state[key] = torch.zeros(shape, dtype=dtype)
    return state


def legacy_checkpoint(name: str, out: Path) -> Path:
    """A checkpoint as fixture ``name``'s code wrote it, with seeded random weights."""
    fx = fixture(name)
    path = out / f"{name}.ckpt"
    torch.save({"state_dict": seeded_state(name), "hyper_parameters": fx["hyper_parameters"],
                "epoch": fx["epoch"], "global_step": fx["global_step"]}, path)
    return path


def resaved(path: Path) -> Path:
    """The checkpoint at ``path`` written again by today's code (its module's hyper-parameters
    and state dict, as ``retina train`` saves them)."""
    module = module_from_checkpoint(path)
    out = path.with_name(path.stem + "_today.ckpt")
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
                "epoch": 0, "global_step": 0}, out)
    return out


def assert_same_detections(got: list[dict], expected: list[dict]) -> None:
    """Bit-identical: the same fields, the same values, in the same order."""
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert a.keys() == b.keys()
        for field in a:
            assert torch.equal(a[field], b[field]), field


def images() -> list[torch.Tensor]:
    """A validation tile and a crop of another size (boxes scale per axis)."""
    tile = read_rgb(VAL_TILES[0])
    return [tile, tile[:, :300, :380].contiguous()]


@pytest.mark.parametrize("name", [n.removeprefix("v1_") for n in V1])
def test_schema_1_run_configs_are_read_in_todays_layout(name, tmp_path):
    old = json.loads(fixture(f"v1_{name}")["hyper_parameters"]["run_config"])
    assert "anchors" in old["model"] and old["model"]["_target_"] == "retina.lit.DetectionModule"
    run = run_config(load_checkpoint(legacy_checkpoint(f"v1_{name}", tmp_path)))
    assert run.model._target_ == "retina.training.module.DetectionModule"
    assert "anchors" not in run.model and run.model.detector.anchors == old["model"]["anchors"]
    old_coder = old["model"]["postprocess"]["coder"]
    assert run.model.coder == old_coder | {
        "_target_": old_coder["_target_"].replace("retina.boxes.", "retina.ops.boxes.")}
    assert "num_anchors" not in run.model.detector.head and run.model.detector.head._partial_
    assert "coder" not in run.model.criterion and "matcher" not in run.model.criterion
    assert run.model.criterion.assigner._target_.startswith("retina.assign.")


@pytest.mark.parametrize("name", V2)
def test_schema_2_run_configs_are_read_unchanged(name, tmp_path):
    # version 2 named today's import paths: reading changes nothing
    old = json.loads(fixture(name)["hyper_parameters"]["run_config"])
    run = OmegaConf.to_container(run_config(load_checkpoint(legacy_checkpoint(name, tmp_path))))
    assert run == old


@pytest.mark.parametrize("name", V1 + V2)
def test_old_checkpoints_rebuild_with_every_weight(name, tmp_path):
    path = legacy_checkpoint(name, tmp_path)
    module = module_from_checkpoint(path)  # load_state_dict is strict: every key fits
    saved = torch.load(path, weights_only=True)["state_dict"]
    for key, value in module.state_dict().items():
        assert torch.equal(value, saved[key]), key
    assert type(module.criterion).__name__ == CRITERION[name.split("_", 1)[1]]
    assert module.detector.head.num_anchors == module.detector.anchors.num_anchors


@pytest.mark.parametrize("name", V1 + V2)
def test_old_checkpoints_detect_what_todays_files_of_their_weights_detect(name, tmp_path):
    old = legacy_checkpoint(name, tmp_path)
    today = resaved(old)
    hp = torch.load(today, weights_only=True)["hyper_parameters"]
    assert json.loads(hp["run_config"])["schema_version"] == SCHEMA_VERSION
    ims = images()
    predictors = [from_checkpoint(p).set_postprocess(score_thresh=0.0) for p in (old, today)]
    dets = predictors[0](ims)
    assert all(len(d["boxes"]) > 0 for d in dets)
    assert_same_detections(predictors[1](ims), dets)
    # validation's path, through the modules
    batch = predictors[0].preprocess(ims)
    modules = [module_from_checkpoint(p) for p in (old, today)]
    for module in modules:
        module.postprocess.score_thresh = 0.0
    assert_same_detections(modules[1].predict_batch(batch), modules[0].predict_batch(batch))


def test_checkpoints_with_float64_nms_rebuild(tmp_path):
    # checkpoints and exports written while the NMS had a float64 switch (it is exact now)
    path = legacy_checkpoint("v2_retinanet", tmp_path)
    ckpt = load_checkpoint(path)
    run = json.loads(ckpt["hyper_parameters"]["run_config"])
    run["model"]["postprocess"]["float64_nms"] = True
    ckpt["hyper_parameters"]["run_config"] = json.dumps(run)
    assert "float64_nms" not in run_config(ckpt).model.postprocess
    assert module_from_checkpoint(ckpt).postprocess.nms_thresh == (
        run["model"]["postprocess"]["nms_thresh"])


def test_old_checkpoint_evaluates(tmp_path):
    path = legacy_checkpoint("v1_retinanet", tmp_path)
    metrics = evaluated(path)
    assert {"val/mAP", "val/mAP_50", "val/AR_100"} <= set(metrics)


@pytest.mark.parametrize("name", ["v1_gfl", "v1_retinanet", "v2_gfl", "v2_softmax_focal"])
def test_old_checkpoint_exports_and_loads(name, tmp_path):
    path = legacy_checkpoint(name, tmp_path)
    ims = images()
    eager = from_checkpoint(path).set_postprocess(score_thresh=0.0)
    expected = eager(ims)
    assert all(len(d["boxes"]) > 0 for d in expected)
    by_load = retina.load(path, runtime="eager").set_postprocess(score_thresh=0.0)(ims)
    exported = load(export(eager, "safetensors", tmp_path / f"{name}.safetensors"),
                    runtime="eager")(ims)
    for got in (by_load, exported):
        assert_same_detections(got, expected)


@pytest.mark.parametrize("name", ["v2_gfl", "v2_retinanet"])
def test_format_2_exports_detect_what_todays_exports_detect(name, tmp_path):
    path = legacy_checkpoint(name, tmp_path)
    predictor = from_checkpoint(path).set_postprocess(score_thresh=0.0)  # as the fixture's
    today = export(predictor, "safetensors", tmp_path / "today" / "model.safetensors")
    old_dir = tmp_path / "old"
    old_dir.mkdir()
    (old_dir / "model.safetensors").write_bytes(today.with_suffix(".safetensors").read_bytes())
    sidecar = (FIXTURES / f"{name}.export.json").read_text()
    assert json.loads(sidecar)["format_version"] == 2
    (old_dir / "model.json").write_text(sidecar)
    old, new = load(old_dir / "model.json", runtime="eager"), load(today, runtime="eager")
    assert old.meta.model == new.meta.model
    assert_same_detections(old(images()), new(images()))


def test_format_1_export_metadata_is_read_as_today(tmp_path):
    path = legacy_checkpoint("v1_gfl", tmp_path)
    meta = from_checkpoint(path).meta
    old = json.loads(meta.to_json())
    old["format_version"] = 1
    legacy_model = json.loads(fixture("v1_gfl")["hyper_parameters"]["run_config"])["model"]
    legacy_model["detector"]["backbone"]["weights"] = None  # as every export writes it
    old["model"] = {part: legacy_model[part] for part in ("detector", "anchors", "postprocess")}
    read = ExportMeta.from_json(json.dumps(old), "old.json")
    assert read.model == meta.model
    # today's layout (version 2) comes back unchanged
    assert load_model_config(meta.model, 2) == meta.model


@pytest.mark.parametrize("name", ["v2_gfl", "v2_softmax_focal"])
def test_files_written_today_hold_no_import_path_of_the_package(name, tmp_path):
    today = resaved(legacy_checkpoint(name, tmp_path))
    hp = torch.load(today, weights_only=True)["hyper_parameters"]
    saved = json.dumps(hp)
    assert not re.findall(r"retina\.[a-z_]+\.", saved)
    assert '"_type_": "head/' in hp["run_config"] and '"_type_": "loss/' in hp["run_config"]
    sidecar = export(from_checkpoint(today), "safetensors", tmp_path / "m.safetensors")
    text = sidecar.read_text()
    assert not re.findall(r"retina\.[a-z_]+\.", text)
    assert json.loads(text)["format_version"] == SCHEMA_VERSION
    assert json.loads(text)["retina_version"] == importlib.metadata.version("retina-det")
