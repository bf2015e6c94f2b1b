"""The documented commands that run in seconds on a tiny model, run as written (the reader's
checkpoint, images and output folder replaced by this checkout's): predict, export, eval,
report, parity, export-speed. The others (train, convert, tile, bench, sweep-report, eval on
other data) get their command line checked in tests/test_doc_commands.py."""

from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path

import pytest

from retina import cli
from retina.training.config import ROOT
from tests.doc_commands import DocCommand, as_here, commands

RUN = ("predict", "export", "eval", "report", "parity", "export-speed")
RUNNABLE = [c for c in commands() if c.name in RUN and not any(
    a.startswith(("data", "+data")) for a in c.argv)]
VAL = ROOT / "data" / "neon_trees" / "val"


@pytest.fixture(scope="module")
def reader(trained_retinanet, tmp_path_factory):
    """What a reader of the docs has: a checkpoint, a folder of images, a results file."""
    tmp = tmp_path_factory.mktemp("reader")
    images = tmp / "images"
    images.mkdir()
    for tile in sorted(VAL.glob("*.png"))[:2]:
        shutil.copy(tile, images / tile.name)
    from retina.predict import main as predict

    assert predict([f"model={trained_retinanet.ckpt}", f"images={images}", f"out={tmp / 'p'}",
                    "conf=0.005", "progress=false"]) == 0
    return {"model": trained_retinanet.ckpt, "images": images,
            "results": tmp / "p" / "results.json"}


def test_most_documented_commands_of_these_kinds_run():
    assert len(RUNNABLE) >= 15 and {c.name for c in RUNNABLE} == set(RUN)


@pytest.mark.long  # ~20 commands, 5-10 s each (make test checks them all: tests/test_doc_commands.py)
@pytest.mark.parametrize("cmd", RUNNABLE, ids=str)
def test_a_documented_command_runs(cmd: DocCommand, reader, tmp_path, capsys):
    argv = as_here(cmd, reader["model"], tmp_path)
    swap = {"images": reader["images"], "results": reader["results"],
            "ann": ROOT / "data/neon_trees/annotations/val.json"}
    argv = [f"{k}={swap[k]}" if k in swap and k != "ann" or (k == "ann" and cmd.name == "report")
            else a for a, k in ((a, a.split("=", 1)[0]) for a in argv)]
    if cmd.name == "parity":
        argv += ["max_images=2", "num_random=0"]  # two images are enough to run it
    if cmd.name == "export-speed":
        argv += ["repeats=1", "warmup=0"]
    if cmd.name in ("parity", "export-speed") and not any(a.startswith("calib=") for a in argv):
        argv.append("calib=null")  # the INT8 exports: their own tests (e2e/test_fast_cpu.py)
    if cmd.name == "eval" and not any(a.startswith("out=") for a in argv):
        argv.append(f"out={tmp_path / 'eval'}")  # not the checkout's outputs/
    main = importlib.import_module(cli.COMMANDS[cmd.name].module).main
    code = main(argv)
    assert code == 0, f"{cmd}\n{capsys.readouterr().err[-2000:]}"
    if cmd.name == "predict":
        out = next(a.split("=", 1)[1] for a in argv if a.startswith("out="))
        assert isinstance(json.loads((Path(out) / "results.json").read_text()), list)
