"""User-facing paths that the other end-to-end tests do not take: evaluation on other data,
loader workers, min/max-size models, every file type of retina.load, one-file prediction,
the measuring commands, and a validation without detections."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import retina
from retina.data.coco import load_coco, read_rgb
from retina.export.formats import export
from retina.infer.predictor import from_checkpoint
from retina.predict import main as predict_main
from retina.training.coco_eval import coco_evaluate, to_coco_results
from retina.training.config import ROOT
from retina.training.run import train
from tests.helpers import TRAINED, TRAINED_SIZE, evaluated

NEON = ROOT / "data" / "neon_trees"
VAL_ANN, VAL_IMAGES = NEON / "annotations" / "val.json", NEON / "val"


def command(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    run = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True,
                         timeout=timeout)
    assert run.returncode == 0, run.stderr[-3000:]
    return run


def test_eval_on_other_data_in_the_coco_layout(trained_retinanet, tiny_cfg, tmp_path):
    # four NEON tiles as a COCO 2017 folder, evaluated with data=coco instead of the
    # checkpoint's own data
    coco = json.loads(VAL_ANN.read_text())
    keep = {im["id"] for im in sorted(coco["images"], key=lambda im: im["id"])[:4]}
    coco["images"] = [im for im in coco["images"] if im["id"] in keep]
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] in keep]
    (tmp_path / "coco" / "annotations").mkdir(parents=True)
    ann = tmp_path / "coco" / "annotations" / "instances_val2017.json"
    ann.write_text(json.dumps(coco))
    shutil.copy(ann, ann.with_name("instances_train2017.json"))
    for split in ("val2017", "train2017"):
        (tmp_path / "coco" / split).symlink_to(VAL_IMAGES)
    metrics = evaluated(trained_retinanet.ckpt, f"data.root={tmp_path / 'coco'}",
                        f"data.size={TRAINED_SIZE}", "data.min_size=null",
                        "data.max_size=null", "data.num_workers=0",
                        # padded as in training (NEON: 32; data=coco's default is 128,
                        # and more zero padding changes the coarse levels' outputs)
                        "data.size_divisible=32", data="coco")
    # the same numbers through the predictor and pycocotools directly
    predictor = from_checkpoint(trained_retinanet.ckpt)
    predictor.fold_bn = False  # validation's unfolded network: the same numbers to the bit
    gt = load_coco(ann)
    ids = sorted(gt.imgs)
    dets = predictor([read_rgb(VAL_IMAGES / gt.imgs[i]["file_name"]) for i in ids])
    expected, _ = coco_evaluate(gt, to_coco_results(ids, dets, predictor.cat_ids), ids)
    assert expected["AR_100"] > 0
    for key in ("mAP", "mAP_50", "AR_100"):
        assert metrics[f"val/{key}"] == pytest.approx(expected[key], abs=1e-6), key
    assert metrics["val/AR_100"] != pytest.approx(trained_retinanet.metrics["val/AR_100"])


def test_loader_workers_and_a_validation_without_detections(tiny_cfg):
    # the shipped experiments use a loader worker; a threshold nothing passes: zeros, no crash
    metrics = train(tiny_cfg("debug=fdr", "data.num_workers=1",
                             "model.postprocess.score_thresh=0.999"))
    assert metrics["val/mAP"] == 0 and metrics["val/AR_100"] == 0


def test_min_max_size_model_exports_and_predicts(tiny_cfg, tmp_path):
    train(tiny_cfg("experiment=neon_retinanet", *TRAINED, "data.size=null", "data.min_size=128",
                   "data.max_size=200"))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    eager = from_checkpoint(ckpt)
    assert (eager.meta.min_size, eager.meta.max_size, eager.meta.size) == (128, 200, None)
    images = [read_rgb(p) for p in sorted(VAL_IMAGES.glob("*.png"))[:2]]
    expected = eager(images)
    assert all(len(d["boxes"]) > 0 for d in expected)
    # runtime=auto: a graph cannot follow a min/max-size model: eager, exactly
    loaded = retina.load(export(eager, "safetensors", tmp_path / "m.safetensors"))(images)
    for a, b in zip(loaded, expected):
        assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["scores"], b["scores"])
    with pytest.raises(ValueError, match="pass input_size"):  # graphs run at a fixed size
        export(eager, "onnx", tmp_path / "m.onnx")
    graph = retina.load(export(eager, "onnx", tmp_path / "m.onnx", input_size=(128, 128)))
    assert graph.meta.graph_input_size == [128, 128] and len(graph(images)[0]["boxes"]) > 0


def test_load_reads_checkpoints_and_torchscript_under_both_suffixes(trained_gfl, tmp_path):
    images = [read_rgb(p) for p in sorted(VAL_IMAGES.glob("*.png"))[:2]]
    expected = from_checkpoint(trained_gfl.ckpt)(images)
    from_ckpt = retina.load(trained_gfl.ckpt, runtime="eager")(images)
    script = export(from_checkpoint(trained_gfl.ckpt), "torchscript", tmp_path / "m.pt")
    shutil.copy(script, tmp_path / "m.ts")
    for got in (from_ckpt, retina.load(script)(images), retina.load(tmp_path / "m.ts")(images)):
        for a, b in zip(got, expected):
            assert len(a["boxes"]) == len(b["boxes"]) > 0
            torch.testing.assert_close(a["boxes"], b["boxes"])
            torch.testing.assert_close(a["spread"], b["spread"], rtol=1e-4, atol=1e-4)


def test_predict_one_file(trained_retinanet, tmp_path, capsys):
    image = sorted(VAL_IMAGES.glob("*.png"))[0]
    code = predict_main([f"model={trained_retinanet.ckpt}", f"images={image}",
                         f"out={tmp_path / 'out'}", "progress=false", "conf=0.005"])
    assert code == 0
    assert json.loads((tmp_path / "out" / "images.json").read_text()) == {image.name: 1}
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert len(results) > 0 and {r["image_id"] for r in results} == {1}
    assert json.loads(capsys.readouterr().out)["detections"] == len(results)


@pytest.mark.long  # parity and export-speed export twice: ~50 s (the formats' agreement: test_export.py)
def test_measuring_commands_run(trained_retinanet, tmp_path):
    ckpt = trained_retinanet.ckpt
    parity = command("retina.infer.parity", f"model={ckpt}", "max_images=2", "num_random=0")
    assert "onnx runtime" in parity.stdout and "yes" in parity.stdout
    speed = command("retina.infer.speed", f"model={ckpt}", f"tile={TRAINED_SIZE}",
                    "repeats=1", "warmup=0")
    assert "torchscript" in speed.stdout and "ms" in speed.stdout
    weights = command("retina.model.offline_weights")
    assert Path(weights.stdout.strip().splitlines()[-1]).is_file()
    probe = json.loads(command("retina.bench", "probe").stdout)
    assert probe["matmul_peak_gflops"] > 1 and probe["machine"]["cpus"] >= 1


@pytest.mark.long  # trains ours and torchvision's on NEON: over a minute
def test_bench_accuracy_command_writes_its_report(tmp_path):
    out = tmp_path / "accuracy.json"
    command("retina.bench", "accuracy", "minutes=0.05", "seeds=2",
            "models=[gfl,torchvision_fair]", f"out={out}", timeout=1200)
    report = json.loads(out.read_text())
    assert report["seeds"] == [0, 1] and list(report["results"]) == ["gfl", "torchvision_fair"]
    for result in report["results"].values():
        summary = result["summary"]
        assert [r["seed"] for r in result["runs"]] == [0, 1] and len(summary["epochs"]) == 2
        assert summary["mAP_50"]["min"] <= summary["mAP_50"]["median"] <= summary["mAP_50"]["max"]
        assert set(summary["AP50_by_site"]) == {"OSBS", "SOAP", "YELL", "other_sites"}
    assert set(report["ratios"]["gfl/torchvision_fair"]) == {"mAP_50", "mAP", "AP50_other_sites"}
