"""Export (safetensors + JSON, TorchScript, ONNX), retina.load and retina.predict on tiny
models trained for two steps on real NEON tiles."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO

import retina
from retina.data.coco import load_coco, read_rgb
from retina.export import export
from retina.export.calibration import Calibration
from retina.infer import from_checkpoint
from retina.infer.parity import format_table, match, parity
from retina.infer.runtimes import installed
from retina.infer.speed import format_table as speed_table
from retina.infer.speed import speed
from retina.predict import main as predict_main
from retina.predict import parse, predict
from retina.training.coco_eval import coco_evaluate, to_coco_results
from retina.training.config import ROOT

NEON = ROOT / "data" / "neon_trees"
VAL_ANN, VAL_IMAGES = NEON / "annotations" / "val.json", NEON / "val"


@pytest.fixture
def retinanet(trained_retinanet) -> tuple[Path, dict]:
    """(last.ckpt, training metrics) of the session's tiny RetinaNet (tests/conftest.py)."""
    return trained_retinanet.ckpt, trained_retinanet.metrics


@pytest.fixture
def gfl(trained_gfl) -> tuple[Path, dict]:
    return trained_gfl.ckpt, trained_gfl.metrics


def val_images(num: int | None = None) -> tuple[list[int], list[torch.Tensor]]:
    coco = load_coco(VAL_ANN)
    ids = sorted(coco.imgs)[:num]
    return ids, [read_rgb(VAL_IMAGES / coco.imgs[i]["file_name"]) for i in ids]


# ---------------------------------------------------------------- parity


def _check_parity(ckpt: Path, tmp_path: Path, max_images: int,
                  calibration: Calibration | None = None) -> dict[str, dict]:
    rows = parity(ckpt, VAL_ANN, VAL_IMAGES, tmp_path, batch_size=2, num_random=1,
                  max_images=max_images, calibration=calibration)
    print(format_table(rows))
    by_name = {r["runtime"]: r for r in rows}
    assert by_name["eager (checkpoint)"]["dets"] > 50  # something to compare
    exact = ["safetensors", "torchscript", "onnx runtime", "runtime=auto (cached graph)"]
    for name in exact + ["openvino"] * installed("openvino"):
        row = by_name[name]
        assert row["ok"], (name, row)
        assert row["unmatched"] == 0 and row["box_rel"] <= 1e-3
    for name in ("safetensors", "torchscript"):  # same kernels, same pixels: bit-identical
        assert by_name[name]["box_abs"] == 0 and by_name["safetensors"]["score_abs"] == 0
    # the graph takes the sigmoid over all candidates, eager over the survivors: torch's CPU
    # sigmoid can differ by one float32 ulp between a vector lane and the scalar tail
    assert by_name["torchscript"]["score_abs"] <= 1e-6
    # resizing inside the graph (in float) changes a few pixels by one 8-bit level
    assert by_name["onnx runtime, resize in graph"]["dets"] > 0
    return by_name


@pytest.mark.openvino
def test_retinanet_formats_agree(retinanet, tmp_path):
    rows = _check_parity(retinanet[0], tmp_path, max_images=3,
                         calibration=Calibration.from_folder(NEON / "train", 2))
    assert {p.name for p in tmp_path.iterdir()} >= {"model.safetensors", "model.json",
                                                     "model.pt", "model.onnx", "model_int8.onnx"}
    int8 = ["onnx runtime int8"] + ["openvino int8"] * installed("openvino")
    for name in int8:  # their boxes move; two steps of training leave mAP_50 near 0 anyway
        assert rows[name]["dets"] > 0 and rows[name]["ok"] in (True, False)
    assert "int8: ok when mAP_50 is within 0.01" in format_table(list(rows.values()))


@pytest.mark.slow
@pytest.mark.openvino
def test_gfl_formats_agree_with_spread(gfl, tmp_path):
    _check_parity(gfl[0], tmp_path, max_images=4)
    _, images = val_images(2)
    eager = from_checkpoint(gfl[0])(images)
    onnx_dets = retina.load(tmp_path / "model.onnx")(images)
    for a, b in zip(eager, onnx_dets):
        assert a["spread"].shape == a["boxes"].shape and (a["spread"] >= 0).all()
        torch.testing.assert_close(b["spread"], a["spread"], rtol=1e-3, atol=1e-3)


def test_safetensors_load_reproduces_eval_exactly(retinanet, exported):
    ckpt, metrics = retinanet
    loaded = retina.load(exported["safetensors"], runtime="eager")
    assert retina.load(exported["safetensors"].with_suffix(".safetensors"),
                       runtime="eager").meta == loaded.meta
    sidecar = json.loads(exported["safetensors"].read_text())
    assert sidecar["class_names"] == ["Tree"] and sidecar["cat_ids"] == [1]
    assert sidecar["size"] == 160 and sidecar["model"]["detector"]["backbone"]["weights"] is None
    assert sidecar["model"]["postprocess"]["score_thresh"] == 0.005
    assert len(sidecar["pixel_mean"]) == 3 and sidecar["retina_version"]

    ids, images = val_images()
    eager = from_checkpoint(ckpt)(images)
    dets = loaded(images)
    for a, b in zip(eager, dets):
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), k
    # the predictor is the eval path: without folding its batch norms, the same mAP as
    # validation at the end of training; folded (the default), the same to float rounding
    def mAP_of(predictor):
        dets = predictor(images)
        results = to_coco_results(ids, dets, predictor.cat_ids)
        return coco_evaluate(load_coco(VAL_ANN), results, ids)[0]["mAP"]

    unfolded = retina.load(exported["safetensors"], runtime="eager")
    unfolded.fold_bn = False
    assert np.float32(mAP_of(unfolded)) == np.float32(metrics["val/mAP"])  # logged as float32
    assert mAP_of(loaded) == pytest.approx(metrics["val/mAP"], rel=1e-3) and metrics["val/mAP"] > 0


def test_graph_contract_dynamic_batch_and_size(exported):
    model = onnx.load(str(exported["onnx"]))
    onnx.checker.check_model(model)
    assert model.opset_import[0].version >= 17
    (inp,) = model.graph.input
    assert [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim] == [
        "batch", 3, "height", "width"]
    assert [o.name for o in model.graph.output] == ["boxes", "scores", "labels", "num_dets"]
    session = ort.InferenceSession(str(exported["onnx"]))
    script = torch.jit.load(str(exported["torchscript"]))
    gen = torch.Generator().manual_seed(0)
    for b, h, w in ((2, 160, 160), (1, 200, 97), (3, 64, 300)):
        images = torch.randint(0, 256, (b, 3, h, w), dtype=torch.uint8, generator=gen)
        boxes, scores, labels, num = session.run(None, {"images": images.numpy()})
        assert boxes.shape == (b, 100, 4) and scores.shape == labels.shape == (b, 100)
        assert (num > 0).all()  # scores near the prior 0.01 pass the 0.005 threshold
        assert num.shape == (b,) and labels.dtype == np.int64
        for i, n in enumerate(num):
            assert (labels[i, n:] == -1).all() and (scores[i, n:] == 0).all()
            assert (np.diff(scores[i, :n]) <= 0).all()  # sorted by score
            assert (boxes[i, :n, 0::2] <= w + 1e-3).all() and (boxes[i, :n, 1::2] <= h + 1e-3).all()
        if (h, w) != (160, 160):
            continue  # the graphs resize: torch and ONNX Runtime round a few pixels apart
        with torch.no_grad():
            ts = script(images)
        np.testing.assert_array_equal(ts[3].numpy(), num)
        for i, n in enumerate(num):  # near-equal scores may swap places: match, then compare
            pair = match({"boxes": ts[0][i, :n], "scores": ts[1][i, :n], "labels": ts[2][i, :n]},
                         {"boxes": torch.from_numpy(boxes[i, :n]),
                          "scores": torch.from_numpy(scores[i, :n]),
                          "labels": torch.from_numpy(labels[i, :n])})
            assert pair["unmatched"] == 0 and pair["box_rel"] <= 1e-3, pair


def test_no_candidates_gives_empty_padded_rows(retinanet, tmp_path):
    predictor = from_checkpoint(retinanet[0]).set_postprocess(score_thresh=0.999)
    images = torch.randint(0, 256, (2, 3, 100, 120), dtype=torch.uint8)
    assert [len(d["boxes"]) for d in predictor(images)] == [0, 0]
    path = export(predictor, "onnx", tmp_path / "m.onnx")  # the graph of TorchScript too
    dets = retina.load(path)(images)
    assert [d["boxes"].shape for d in dets] == [(0, 4), (0, 4)]
    meta = json.loads(onnx.load(str(path)).metadata_props[0].value)
    assert meta["model"]["postprocess"]["score_thresh"] == 0.999


def test_export_command_options(retinanet, tmp_path):
    from retina.cli import parse_command
    from retina.export.__main__ import run_export

    out = tmp_path / "cli" / "tiny.pt"
    opts, _ = parse_command("export", [f"model={retinanet[0]}", "format=torchscript",
                                       f"out={out}", "max_det=7"])
    assert run_export(opts) == out
    images = torch.randint(0, 256, (1, 3, 128, 128), dtype=torch.uint8)
    predictor = retina.load(out)
    assert predictor.meta.graph_input_size == [160, 160] and predictor.meta.size == 160
    assert predictor.meta.model["postprocess"]["max_det"] == 7
    assert len(predictor(images)[0]["boxes"]) == 7  # many pass the 0.005 threshold: capped
    # out without a suffix: the format's is added, so that retina.load reads the file
    opts, _ = parse_command("export", [f"model={retinanet[0]}", "format=torchscript",
                                       f"out={tmp_path / 'model_ts'}"])
    assert run_export(opts) == tmp_path / "model_ts.pt"
    assert len(retina.load(tmp_path / "model_ts.pt")(images)[0]["boxes"]) > 0


# ---------------------------------------------------------------- bad files


def _bad_files(exported: dict[str, Path], tmp: Path) -> dict[str, Path]:
    files = {}
    for fmt, path in (("onnx", exported["onnx"]), ("torchscript", exported["torchscript"])):
        data = path.read_bytes()
        files[f"truncated {fmt}"] = tmp / f"cut{path.suffix}"
        files[f"truncated {fmt}"].write_bytes(data[: len(data) // 3])
    weights = exported["safetensors"].with_suffix(".safetensors").read_bytes()
    sidecar = json.loads(exported["safetensors"].read_text())
    for name, keep_hash in (("cut_hashed", True), ("cut_unhashed", False)):
        (tmp / f"{name}.safetensors").write_bytes(weights[: len(weights) // 3])
        side = {**sidecar, "weights": f"{name}.safetensors"}
        if not keep_hash:
            del side["weights_sha256"]
        (tmp / f"{name}.json").write_text(json.dumps(side))
        files[f"truncated safetensors, {name}"] = tmp / f"{name}.safetensors"
    (tmp / "foreign.json").write_text(json.dumps({"name": "something else"}))
    (tmp / "broken.json").write_text('{"format": "retina-detector", ')
    files["foreign json"], files["broken json"] = tmp / "foreign.json", tmp / "broken.json"
    (tmp / "noise.onnx").write_bytes(b"\x08\x07 not a protobuf" * 10)
    files["noise onnx"] = tmp / "noise.onnx"
    torch.jit.save(torch.jit.script(torch.nn.ReLU()), str(tmp / "relu.pt"))
    files["foreign torchscript"] = tmp / "relu.pt"
    torch.save({"state_dict": {}}, tmp / "other.ckpt")
    files["foreign checkpoint"] = tmp / "other.ckpt"
    return files


def test_bad_files_give_errors_naming_them(exported, tmp_path, capsys):
    for what, path in _bad_files(exported, tmp_path).items():
        with pytest.raises(ValueError) as err:
            retina.load(path)
        assert path.name in str(err.value), (what, str(err.value))
    with pytest.raises(ValueError, match="unknown model file type"):
        retina.load(tmp_path / "model.h5")
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        retina.load(tmp_path / "missing.onnx")
    # the command line reports the same message and exits with 2
    assert predict_main([f"model={tmp_path / 'cut.onnx'}", f"images={VAL_IMAGES}",
                         f"out={tmp_path / 'out'}", "progress=false"]) == 2
    assert not (tmp_path / "out").exists()  # nothing written for a model that does not load
    assert "cut.onnx is not a loadable ONNX model" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # a wrong option: before any file is read
        predict_main(["model=x.onnx", "images=y", "out=z", "batchsize=2"])
    assert exit_info.value.code == 2 and "batchsize" in capsys.readouterr().err


# ---------------------------------------------------------------- predict


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    """Two NEON tiles, grayscale / RGBA / 16-bit PNGs made from the first, a text file and
    a file that claims to be a PNG."""
    folder = tmp_path / "images"
    folder.mkdir()
    _, (a, b) = val_images(2)
    rgb = a.permute(1, 2, 0).numpy()  # (H, W, 3)
    Image.fromarray(rgb).save(folder / "a.png")
    Image.fromarray(b.permute(1, 2, 0).numpy()).save(folder / "b.jpg", quality=95)
    Image.fromarray(rgb).convert("L").save(folder / "gray.png")
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)]), "RGBA").save(
        folder / "rgba.png")
    Image.fromarray(rgb[..., 1].astype(np.uint16) * 257).save(folder / "gray16.png")
    (folder / "notes.txt").write_text("not an image")
    (folder / "fake.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    return folder


@pytest.mark.parametrize("fmt", ["onnx", "safetensors"])
def test_predict_writes_coco_results_and_skips_non_images(fmt, exported, image_dir, tmp_path,
                                                          caplog):
    out = tmp_path / "pred"
    cfg = parse([f"model={exported[fmt]}", f"images={image_dir}", f"out={out}", "draw=true",
                 "batch_size=3", "progress=false", "conf=0.005", "draw_conf=0.005"])
    with caplog.at_level(logging.WARNING, logger="retina.predict"):
        summary = predict(cfg)
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "notes.txt" in warned and "fake.png" in warned
    mapping = json.loads((out / "images.json").read_text())
    assert sorted(mapping) == ["a.png", "b.jpg", "gray.png", "gray16.png", "rgba.png"]
    assert summary == {"images": 5, "skipped": 2, "detections": summary["detections"]}
    results = json.loads((out / "results.json").read_text())
    assert len(results) == summary["detections"] > 0
    assert {r["category_id"] for r in results} == {1}  # NEON's "Tree"
    assert {r["image_id"] for r in results} <= set(mapping.values())
    # the results load into pycocotools against a ground truth of the same images
    gt = COCO()
    gt.dataset = {"images": [{"id": i, "file_name": n, "height": 400, "width": 400}
                             for n, i in mapping.items()],
                  "categories": [{"id": 1, "name": "Tree"}], "annotations": []}
    gt.createIndex()
    gt.loadRes(results)
    # RGBA drops alpha, so it detects exactly what the RGB file does
    boxes = {n: np.array(sorted(r["bbox"] for r in results if r["image_id"] == i))
             for n, i in mapping.items()}
    np.testing.assert_allclose(boxes["rgba.png"], boxes["a.png"], rtol=1e-4, atol=1e-3)
    drawn = sorted(p.name for p in (out / "drawn").iterdir())
    assert drawn == ["a.png", "b.png", "gray.png", "gray16.png", "rgba.png"]
    assert read_rgb(out / "drawn" / "gray16.png").shape == (3, 400, 400)


def test_predict_takes_image_ids_from_coco_file(retinanet, exported, tmp_path):
    out = tmp_path / "pred"
    predict(parse([f"model={exported['torchscript']}", f"images={VAL_IMAGES}/*.png",
                   f"out={out}", f"ann={VAL_ANN}", "progress=false", "conf=0.005"]))
    coco = load_coco(VAL_ANN)
    mapping = json.loads((out / "images.json").read_text())
    assert mapping == {im["file_name"]: i for i, im in coco.imgs.items()}
    metrics, _ = coco_evaluate(coco, json.loads((out / "results.json").read_text()))
    # the graph's detections score like training's validation (same boxes, scores to an ulp)
    assert metrics["mAP"] > 0 and metrics["mAP"] == pytest.approx(retinanet[1]["val/mAP"], abs=1e-4)


@pytest.mark.long  # exports every format, INT8 twice: too long for make test (44 s)
@pytest.mark.openvino
def test_speed_reports_each_runtime(retinanet):
    before = torch.get_num_threads()
    rows = speed(retinanet[0], tile=160, repeats=2, warmup=1, threads=1,
                 calibration=Calibration.from_folder(NEON / "train", 2), batch=2)
    assert torch.get_num_threads() == before  # later tests keep their threads
    names = ["eager pytorch", "torchscript", "onnx runtime", "runtime=auto (onnx)"]
    names += ["openvino"] * installed("openvino") + ["onnx runtime int8"]
    names += ["openvino int8"] * installed("openvino")
    assert [r["runtime"] for r in rows] == names
    assert all(r["median_ms"] >= r["min_ms"] > 0 for r in rows) and rows[0]["ratio"] == 1
    assert all(r["batch"] == 2 for r in rows)
    assert "onnx runtime int8" in speed_table(rows) and "batch 2" in speed_table(rows)


def test_predict_keeps_what_conf_max_det_and_classes_ask_for(retinanet, tmp_path, capsys):
    def results(*options: str) -> list[dict]:
        out = tmp_path / "_".join(o.replace("=", "-").strip("[]") for o in options)
        assert predict_main([f"model={retinanet[0]}", f"images={VAL_IMAGES}", f"out={out}",
                             "progress=false", *options]) == 0
        return json.loads((out / "results.json").read_text())

    every = results("conf=0.005")
    assert len(every) > 100
    scores = sorted({r["score"] for r in every})
    cut = (scores[len(scores) // 2] + scores[len(scores) // 2 + 1]) / 2  # between two scores
    assert [r for r in every if r["score"] > cut] == results(f"conf={cut}")
    capped = results("conf=0.005", "max_det=3")
    for image in {r["image_id"] for r in every}:
        best = [r for r in every if r["image_id"] == image][:3]  # sorted by score per image
        assert [r for r in capped if r["image_id"] == image] == best
    assert results("conf=0.005", "classes=[Tree]") == every == results("conf=0.005", "classes=[1]")
    assert predict_main([f"model={retinanet[0]}", f"images={VAL_IMAGES}",
                         f"out={tmp_path / 'cars'}", "classes=[Car]"]) == 2
    assert "classes: 'Car' is not a class of this model; its classes: Tree (or their ids 1)" in (
        capsys.readouterr().err)
    assert not (tmp_path / "cars").exists()
    # the example, as typed
    run = subprocess.run([sys.executable, "-m", "retina", "predict", f"model={retinanet[0]}",
                          f"images={VAL_IMAGES}", f"out={tmp_path / 'typed'}", "conf=0.3",
                          "max_det=50", "classes=[Tree]", "progress=false"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert all(r["score"] >= 0.3 for r in json.loads((tmp_path / "typed/results.json").read_text()))
