"""The package as a user gets it: the wheel built from this checkout, installed with its
dependencies into a fresh virtual environment outside the checkout, and run from an empty
directory: ``retina --help``, ``retina train debug=fdr`` on a tiny COCO dataset written here,
then a short training and ``retina predict`` on the checkpoint it saved.

Most of its time is pip installing torch into the new environment (from pip's cache or a
local index: 1-3 minutes on a quiet 2-core machine); the venv is removed afterwards. It needs
the package index, so it runs in ``make test-long``, not in ``make test`` (offline).
"""

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retina.training.config import ROOT
from tests.helpers import TINY
from tests.offline import OFFLINE_ENV


def run(*cmd: str | Path, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    # nothing of the checkout on the path: the installed package only; pip needs the package
    # index (or a local one): the one test that reaches the network (tests/offline.py)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and k not in OFFLINE_ENV}
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, f"{cmd}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


def build_wheel(out: Path) -> Path:
    """The wheel of a copy of what it is built from (the checkout stays clean)."""
    src = out / "src"
    shutil.copytree(ROOT / "retina", src / "retina", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src)
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
        "-w", out / "dist", src, cwd=out)
    (wheel,) = (out / "dist").glob("retina_det-*.whl")
    return wheel


def write_boxes_dataset(root: Path) -> Path:
    """Six 96x96 images, each with one bright square on noise, as COCO (train = val)."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    images, annotations = [], []
    for i in range(1, 7):
        pixels = rng.integers(0, 80, (96, 96, 3), np.uint8)
        x, y, side = int(rng.integers(8, 40)), int(rng.integers(8, 40)), int(rng.integers(24, 48))
        pixels[y:y + side, x:x + side] = 230
        Image.fromarray(pixels).save(root / "images" / f"{i}.png")
        images.append({"id": i, "file_name": f"{i}.png", "width": 96, "height": 96})
        annotations.append({"id": i, "image_id": i, "category_id": 1, "iscrowd": 0,
                            "bbox": [x, y, side, side], "area": side * side})
    coco = {"images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": "square"}]}
    (root / "boxes.json").write_text(json.dumps(coco))
    return root


@pytest.mark.long  # pip installs the dependencies from the package index: 1-3 minutes
def test_wheel_installs_and_trains_and_predicts_from_another_directory(tmp_path):
    wheel = build_wheel(tmp_path / "build")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)  # fresh: no site packages of this environment
    try:
        bin_dir = env_dir / "bin"
        run(bin_dir / "python", "-m", "pip", "install", "-q", wheel, cwd=tmp_path, timeout=1800)
        work = write_boxes_dataset(tmp_path / "work")
        retina = bin_dir / "retina"

        assert run(retina, "--help", cwd=work).stdout.startswith("usage: retina COMMAND")
        where = run(bin_dir / "python", "-c", "import retina; print(retina.__file__)", cwd=work)
        assert Path(where.stdout.strip()).is_relative_to(env_dir)

        data = ["data=coco", "experiment=aerial", "data.train_ann=boxes.json",
                "data.train_images=images",
                "data.val_ann=boxes.json", "data.val_images=images",
                "model.detector.backbone.weights=null", *TINY]
        run(retina, "train", "debug=fdr", *data, cwd=work)
        (fdr,) = (work / "outputs" / "train").iterdir()  # under the current directory
        assert "val/mAP" in json.loads((fdr / "metrics.json").read_text())

        run(retina, "train", *data, "trainer.max_epochs=1", "hydra.run.dir=outputs/short",
            "~report", cwd=work)
        ckpt = work / "outputs" / "short" / "checkpoints" / "last.ckpt"
        run(retina, "predict", f"model={ckpt}", "images=images", "out=preds", "draw=true",
            "progress=false", cwd=work)
        assert len(json.loads((work / "preds" / "images.json").read_text())) == 6
        assert isinstance(json.loads((work / "preds" / "results.json").read_text()), list)
        assert len(list((work / "preds" / "drawn").glob("*.png"))) == 6
    finally:
        shutil.rmtree(env_dir, ignore_errors=True)  # torch and its libraries: gigabytes
