"""retina check from the command line, in a fresh process: the NEON default and a missing key."""

import json
import os
import subprocess
import sys

from retina.training.config import ROOT


def retina(*args: str, cwd=ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "retina", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_retina_check_on_neon_prints_and_writes_its_report(tmp_path):
    run = retina("check", f"check.out={tmp_path}", "check.suggest=false",
                 f"hydra.run.dir={tmp_path / 'run'}")
    assert run.returncode == 0, run.stderr
    assert "recipe: aerial (experiment=neon_gfl), the default for data=neon_trees" in run.stdout
    assert "recall ceiling 1.000" in run.stdout
    report = json.loads((tmp_path / "check.json").read_text())
    assert report["splits"]["train"]["images"] == 39 and report["ceiling"] >= 0.95
    assert (tmp_path / "check.png").is_file()


def test_retina_check_names_a_missing_key_in_one_line(tmp_path):
    run = retina("check", "data=voc", cwd=tmp_path)
    assert run.returncode == 2
    assert run.stderr.strip() == ("error: missing data.root (example: retina check data=voc "
                                  "data.root=DIR)")
    assert list(tmp_path.iterdir()) == []
