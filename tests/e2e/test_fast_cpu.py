"""The fast CPU paths on the session's tiny RetinaNet: runtime=auto (ONNX Runtime through the
cached graph) gives the eager results, INT8 exports (ONNX Runtime QDQ, OpenVINO NNCF) keep
the pre- and postprocess in float, fp16 / bf16 graphs load, test-time flip and the full pass
run end to end, and two processes share the files of ``retina predict``."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import rasterio
import torch
from onnx import numpy_helper

import retina
from retina.data.coco import read_rgb
from retina.data.neon import deepforest_data_dir
from retina.export import export
from retina.export.calibration import Calibration
from retina.export.quantize import NETWORK_SCOPES
from retina.infer import from_checkpoint
from retina.infer.parity import BOX_RTOL, match
from retina.predict import main as predict_main
from retina.training.config import ROOT

NEON = ROOT / "data" / "neon_trees"
TRAIN, VAL = NEON / "train", NEON / "val"


def val_tiles(n: int) -> list[torch.Tensor]:
    return [read_rgb(p) for p in sorted(VAL.glob("*.png"))[:n]]


def results_by_image(out: Path) -> dict[int, dict[str, torch.Tensor]]:
    """results.json as detections per image id (boxes x1y1x2y2, in the file's order)."""
    by: dict[int, list] = {}
    for r in json.loads((out / "results.json").read_text()):
        by.setdefault(r["image_id"], []).append(r)
    return {i: {"boxes": torch.tensor([[x, y, x + w, y + h] for x, y, w, h in
                                       (r["bbox"] for r in rs)]),
                "scores": torch.tensor([r["score"] for r in rs]),
                "labels": torch.tensor([r["category_id"] for r in rs])} for i, rs in by.items()}


def assert_same_results(a: Path, b: Path) -> None:
    """Two results.json within the parity tolerances: the same images and counts, every
    detection matched one to one (IoU >= 0.9, same class), boxes within 1e-3 relative."""
    ra, rb = results_by_image(a), results_by_image(b)
    assert ra.keys() == rb.keys() and len(ra) > 0
    for image in ra:
        assert len(ra[image]["boxes"]) == len(rb[image]["boxes"]), image
        pair = match(ra[image], rb[image])
        assert pair["unmatched"] == 0 and pair["box_rel"] <= BOX_RTOL, (image, pair)


def test_predict_runs_onnx_runtime_by_default_with_the_eager_results(trained_retinanet,
                                                                     tmp_path, caplog):
    ckpt = trained_retinanet.ckpt
    common = [f"model={ckpt}", "progress=false", "conf=0.005"]
    with caplog.at_level(logging.INFO):
        assert predict_main([*common, f"images={VAL}", f"out={tmp_path / 'auto'}"]) == 0
    assert "runtime: ONNX Runtime (runtime=auto" in caplog.text
    cache = ckpt.parent / f".{ckpt.name}.graphs"
    assert list(cache.glob("*/model.onnx")) and not list(cache.glob(".building-*"))
    assert predict_main([*common, f"images={VAL}", f"out={tmp_path / 'eager'}",
                         "runtime=eager"]) == 0
    assert_same_results(tmp_path / "auto", tmp_path / "eager")
    # a stricter conf reuses the cached graph; sliced windows go through it too
    caplog.clear()
    scene = sorted(VAL.glob("*.png"))[0]
    with caplog.at_level(logging.INFO):
        for runtime in ("auto", "eager"):
            assert predict_main([*common[:2], "conf=0.01", f"images={scene}", "tile=160",
                                 f"out={tmp_path / ('s' + runtime)}", f"runtime={runtime}",
                                 "batch_size=3"]) == 0
    assert "(cached)" in caplog.text and "exported in" not in caplog.text
    assert_same_results(tmp_path / "sauto", tmp_path / "seager")


def quantized_inputs(model) -> dict[str, list[str]]:
    """For each node outside the network, the op types producing its inputs."""
    producer = {o: n.op_type for n in model.graph.node for o in n.output}
    return {n.name: [producer.get(i, "input") for i in n.input]
            for n in model.graph.node if n.op_type in ("Resize", "NonMaxSuppression", "TopK")
            and not n.name.startswith(NETWORK_SCOPES)}  # the FPN's upsampling is quantized


def test_int8_onnx_export_quantizes_the_network_only(trained_retinanet, tmp_path, capsys):
    from retina.export.__main__ import main as export_main

    out = tmp_path / "int8.onnx"
    assert export_main([f"model={trained_retinanet.ckpt}", "format=onnx", "quantize=int8",
                        f"calib={TRAIN}", "calib_images=3", f"out={out}"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    model = onnx.load(str(out))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") > 20 and "NonMaxSuppression" in ops
    # the resize, top-k and NMS see float tensors, never a DequantizeLinear's output
    outside = quantized_inputs(model)
    assert {"/Resize", "/TopK", "/NonMaxSuppression"} <= outside.keys(), outside
    for name, inputs in outside.items():
        assert "DequantizeLinear" not in inputs, (name, inputs)
    meta = json.loads(next(p.value for p in model.metadata_props if p.key == "retina"))
    assert meta["source"]["quantize"]["type"] == "int8"
    assert meta["source"]["quantize"]["calibration_images"] == 3
    # weights in 7 bits (without VNNI, ONNX Runtime's u8 x s8 pair sums overflow int16 with 8)
    weights = [numpy_helper.to_array(i) for i in model.graph.initializer
               if i.data_type == onnx.TensorProto.INT8 and len(i.dims) == 4]
    assert len(weights) >= 10 and all(-64 <= w.min() and w.max() <= 64 for w in weights)
    assert any(w.min() == -64 or w.max() == 64 for w in weights)  # the 7 bits used
    # ONNX Runtime fuses it into integer convolutions
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(out), options, providers=["CPUExecutionProvider"])
    fused = [n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    assert fused.count("QLinearConv") >= 10
    dets = retina.load(out)(val_tiles(2))
    assert all(len(d["boxes"]) > 0 for d in dets) and dets[0]["boxes"].dtype == torch.float32


def test_fp16_and_bf16_graphs_load_and_detect(trained_retinanet, tmp_path):
    eager = from_checkpoint(trained_retinanet.ckpt)
    tiles = val_tiles(2)
    ref = eager(tiles)
    half = export(eager, "onnx", tmp_path / "half.onnx", precision="fp16")
    weights = {i.data_type for i in onnx.load(str(half)).graph.initializer if len(i.dims) == 4}
    assert weights == {onnx.TensorProto.FLOAT16}  # the convolutions' weights in half
    for path in (half, export(eager, "torchscript", tmp_path / "bf16.pt", precision="bf16")):
        predictor = retina.load(path)
        assert predictor.meta.source["precision"] in ("fp16", "bf16")
        for a, b in zip(ref, predictor(tiles)):
            found = match(a, b)  # half precision moves scores a little: most boxes stay
            assert len(b["boxes"]) > 0 and found["unmatched"] <= 0.3 * (len(a["boxes"]) + len(
                b["boxes"])), found


@pytest.mark.openvino
def test_openvino_runs_a_checkpoint_like_eager_and_its_int8_export(trained_retinanet,
                                                                    tmp_path):
    tiles = val_tiles(3)
    ref = from_checkpoint(trained_retinanet.ckpt)(tiles)
    predictor = retina.load(trained_retinanet.ckpt, runtime="openvino")
    for a, b in zip(ref, predictor(tiles)):
        pair = match(a, b)
        assert len(a["boxes"]) == len(b["boxes"]) and pair["unmatched"] == 0
        assert pair["box_rel"] <= BOX_RTOL
    eager = from_checkpoint(trained_retinanet.ckpt)
    int8 = export(eager, "openvino", tmp_path / "int8.xml", quantize="int8",
                  calibration=Calibration.from_folder(TRAIN, 3))
    assert int8.with_suffix(".bin").is_file()
    loaded = retina.load(int8)
    assert loaded.meta.source["quantize"]["tool"].startswith("nncf")
    import openvino as ov

    ops = ov.Core().read_model(str(int8)).get_ordered_ops()
    types = {op.get_type_name() for op in ops}
    assert "FakeQuantize" in types and "NonMaxSuppression" in types
    # weights in 7 bits (NNCF's overflow fix on every layer, not the first only), but those
    # of the depthwise convolutions (5-d, grouped), whose products are never summed in pairs
    weights = [op.get_data() for op in ops
               if op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.i8]
    dense = [np.abs(w.astype(int)).max() for w in weights if w.ndim == 4]
    assert len(dense) >= 10 and all(w <= 64 for w in dense), dense
    assert all(len(d["boxes"]) > 0 for d in loaded(tiles))
    with pytest.raises(ValueError, match="runtime=eager: int8.xml runs in OpenVINO"):
        retina.load(int8, runtime="eager")


def test_flip_and_full_pass_run_on_a_scene(trained_retinanet, tmp_path):
    scene = deepforest_data_dir() / "OSBS_029.tif"  # 400 x 400
    outs = {}
    for name, extra in (("plain", []), ("both", ["tta=flip", "full_pass=true"])):
        outs[name] = tmp_path / name
        assert predict_main([f"model={trained_retinanet.ckpt}", f"images={scene}",
                             f"out={outs[name]}", "tile=160", "conf=0.005", "progress=false",
                             *extra]) == 0
    plain = json.loads((outs["plain"] / "results.json").read_text())
    both = json.loads((outs["both"] / "results.json").read_text())
    assert len(both) > 0 and len(plain) > 0
    geo = json.loads((outs["both"] / "geojson" / "OSBS_029.geojson").read_text())
    assert len(geo["features"]) == len(both)


def write_scenes(folder: Path, count: int = 3) -> None:
    """``count`` 200 x 200 GeoTIFFs cut from OSBS_029, each with its own transform."""
    folder.mkdir()
    with rasterio.open(deepforest_data_dir() / "OSBS_029.tif") as src:
        for k in range(count):
            window = rasterio.windows.Window(100 * k, 200 * (k % 2), 200, 200)
            profile = {**src.profile, "width": 200, "height": 200,
                       "transform": src.window_transform(window)}
            with rasterio.open(folder / f"scene_{k}.tif", "w", **profile) as dst:
                dst.write(src.read(window=window))


def test_two_processes_share_the_scenes_into_one_results_file(trained_retinanet, tmp_path):
    scenes = tmp_path / "scenes"
    write_scenes(scenes)
    args = [f"model={trained_retinanet.ckpt}", f"images={scenes}", "tile=128", "conf=0.005",
            "progress=false", "device=cpu"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get(
        "PYTHONPATH", "")])}
    for name, extra in (("one", []), ("two", ["devices=2"])):
        run = subprocess.run([sys.executable, "-m", "retina.predict", *args,
                              f"out={tmp_path / name}", *extra], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr[-3000:]
        assert len(run.stdout.strip().splitlines()) == 1  # the summary, printed once
    assert json.loads((tmp_path / "two" / "results.json").read_text()) == json.loads(
        (tmp_path / "one" / "results.json").read_text())
    assert (tmp_path / "two" / "images.json").read_text() == (
        tmp_path / "one" / "images.json").read_text()
    for k in range(3):  # each scene's GeoJSON, written by the process that predicted it
        name = f"geojson/scene_{k}.geojson"
        assert (tmp_path / "two" / name).read_text() == (tmp_path / "one" / name).read_text()
