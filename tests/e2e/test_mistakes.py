"""First-hour mistakes, typed from an empty folder with a trained checkpoint at hand: each is a
few lines naming the culprit, exit 2, no traceback, and leaves the folder empty (no wall-clock
assertion: a loaded machine would fail it; most are answered before torch is imported)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from retina.training.config import ROOT

NEON = ROOT / "data" / "neon_trees"
# (arguments after `retina`, words the error names); CKPT, ONNX, GARBAGE, BADJSON, KERAS, ANN, DIR
# and RESULTS stand for the files of the `files` fixture
MISTAKES = [
    (["predict", "model=CKPT", "images=DIR", "out=o", "conf=high"], ["conf=high", "a number"]),
    (["predict", "model=CKPT", "images=nothere", "out=o"], ["images=nothere"]),
    (["predict", "model=GARBAGE.ckpt", "images=DIR", "out=o"], ["GARBAGE.ckpt", "checkpoint"]),
    (["predict", "model=BADJSON", "images=DIR", "out=o"], ["bad.json", "not JSON"]),
    (["predict", "model=KERAS.h5", "images=DIR", "out=o"], ["model.h5", "not a model file"]),
    (["predict", "model=CKPT", "images=DIR", "out=o", "classes=[Car]"], ["'Car'", "Tree"]),
    (["predict", "model=ONNX", "images=DIR", "out=o", "iou=0.3"], ["iou=0.3", "export again"]),
    (["predict", "model=CKPT", "images=DIR", "out=o", "batch_size=0"], ["batch_size=0"]),
    (["predict", "model=CKPT", "images=DIR", "out=o", "merge=avg"], ["merge=avg", "nms"]),
    (["predict", "model=CKPT", "images=DIR", "outdir=o"], ["'outdir'", "did you mean out?"]),
    (["export", "model=CKPT", "format=tensorrt"], ["format=tensorrt", "onnx"]),
    (["export", "model=CKPT", "opset=11"], ["opset=11", "at least 18"]),
    (["export", "model=ONNX", "format=onnx"], ["model.onnx", "an ONNX export, not a training "
                                                "checkpoint"]),
    (["eval", "model=CKPT", "data=voc"], ["data=voc", "data.root"]),
    (["eval", "model=CKPT", "device=tpu"], ["device=tpu"]),
    (["eval", "model=CKPT", "report.iou=0.5"], ["report.iou", "report.iou_thresh"]),
    (["eval", "model=CKPT", "data.rooot=/x"], ["data.rooot", "not a setting of the "
                                                "checkpoint's data"]),
    (["report", "ann=GARBAGE.ckpt", "results=RESULTS", "out=o"], ["GARBAGE.ckpt"]),
    (["report", "ann=ANN", "results=ANN", "out=o"], ["val.json", "a list of detections"]),
    (["tile", "format=coco", "ann=ANN", "images=nothere", "out=o"], ["images=nothere"]),
    (["tile", "format=xml", "root=DIR", "out=o"], ["format=xml", "coco, voc, yolo"]),
    (["parity", "model=CKPT", "images=nothere"], ["images=nothere"]),  # before the default ann
    (["export-speed", "model=CKPT", "tile=-5"], ["tile=-5"]),
    (["train", "data.size=abc"], ["data.size=abc", "a whole number"]),
    (["train", "optim=adam"], ["optim=adam", "did you mean adamw?"]),
    (["train", "model/backbone=resnet152"], ["model/backbone=resnet152", "resnet101"]),
    (["train", "experiment=neon_retinanet", "loss.gama=2"], ["loss.gama", "loss.gamma"]),
    (["train", "data=coco", "data.train_ann=BADJSON", "data.train_images=DIR",
      "data.val_ann=BADJSON", "data.val_images=DIR"], ["bad.json"]),
    (["sweep-report", "nothere"], ["nothere"]),
    (["bench", "speed", "sizes=abc"], ["sizes=abc"]),
]


@pytest.fixture(scope="module")
def files(trained_retinanet, tmp_path_factory) -> dict[str, str]:
    """A trained checkpoint, its ONNX export, a garbage checkpoint, a JSON that is not, the
    validation annotations and images, and a results file."""
    from retina.export import export
    from retina.infer import from_checkpoint

    tmp = tmp_path_factory.mktemp("files")
    onnx = export(from_checkpoint(trained_retinanet.ckpt), "onnx", tmp / "model.onnx")
    (tmp / "GARBAGE.ckpt").write_bytes(b"\x00garbage" * 100)
    (tmp / "model.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))  # another library's model
    (tmp / "bad.json").write_text('{"format": "retina-detector", ')
    results = tmp / "results.json"
    results.write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5],
                                    "score": 0.5}]))
    return {"CKPT": str(trained_retinanet.ckpt), "ONNX": str(onnx),
            "GARBAGE.ckpt": str(tmp / "GARBAGE.ckpt"), "BADJSON": str(tmp / "bad.json"),
            "KERAS.h5": str(tmp / "model.h5"),
            "ANN": str(NEON / "annotations" / "val.json"), "DIR": str(NEON / "val"),
            "RESULTS": str(results)}


@pytest.mark.parametrize(("argv", "words"), MISTAKES, ids=[" ".join(a) for a, _ in MISTAKES])
def test_a_mistake_is_a_few_lines_naming_it_and_leaves_nothing(argv, words, files, tmp_path):
    for name, path in files.items():
        argv = [a.replace(name, path) for a in argv]
    run = subprocess.run([sys.executable, "-m", "retina", *argv], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    err = run.stderr.strip()
    assert run.returncode == 2, err[-2000:]
    assert "Traceback" not in err and len(err.splitlines()) <= 10, err[-2000:]
    error = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(error) == 1 and all(w in error[0] for w in words), err[-2000:]
    assert list(Path(tmp_path).iterdir()) == [], [p.name for p in tmp_path.iterdir()]
