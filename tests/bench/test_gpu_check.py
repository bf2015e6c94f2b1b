"""retina.bench.gpu_check: it says what it needs before running anything, and the commands it
would run are valid for the bench and the training config."""

import os
import subprocess
import sys

import pytest

from retina.bench import gpu_check
from retina.bench.__main__ import SpeedOptions
from retina.cli import parse_options
from retina.training.config import ROOT, compose_run


def test_a_missing_package_is_named_with_its_pip_line_and_exit_code_3(monkeypatch, capsys):
    real = gpu_check.importlib.util.find_spec
    monkeypatch.setattr(gpu_check.importlib.util, "find_spec",
                        lambda name: None if name in ("hydra", "pycocotools") else real(name))
    assert gpu_check.main(["device=cpu", "dry=true"]) == gpu_check.MISSING
    err = capsys.readouterr().err
    assert "missing Python packages: hydra-core pycocotools" in err
    assert "-m pip install hydra-core pycocotools" in err


def test_missing_data_and_weights_say_how_to_get_them(monkeypatch, tmp_path):
    monkeypatch.setattr(gpu_check, "NEON", tmp_path / "neon_trees")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    found = gpu_check.problems(gpu_check.parse(["device=cpu"]))
    assert len(found) == 2
    assert "no NEON data" in found[0] and "make data" in found[0]
    assert "mobilenet_v2-b0353104.pth" in found[1] and "offline_weights" in found[1]


def test_without_cuda_the_check_refuses_before_running():
    # no CUDA device visible, on a GPU machine too
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    run = subprocess.run([sys.executable, "-m", "retina.bench.gpu_check", "dry=true"], cwd=ROOT,
                         capture_output=True, text=True, env=env)
    assert run.returncode == gpu_check.MISSING and "sees no CUDA device" in run.stderr


def test_unknown_options_are_a_one_line_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        gpu_check.parse(["epoch=5"])
    assert exit_.value.code == 2 and "got 'epoch=5'" in capsys.readouterr().err


@pytest.mark.parametrize("quick", ["false", "true"])
def test_the_commands_parse_as_bench_options_and_compose_as_a_training_run(quick, tmp_path):
    runs = gpu_check.commands(gpu_check.parse([f"quick={quick}", "epochs=3"]), tmp_path)
    assert set(runs) == {"speed_fp32", "speed_bf16-mixed", "speed_compiled", "train_bf16"}
    for name, cmd in runs.items():
        if name.startswith("speed"):
            assert cmd[1:5] == ["-m", "retina", "bench", "speed"]
            opts = parse_options(SpeedOptions, cmd[5:], "")
            assert opts.device == "cuda" and opts.precision in ("fp32", "bf16-mixed")
    assert parse_options(SpeedOptions, runs["speed_fp32"][5:], "").sizes == (
        [128] if quick == "true" else [512, 800])
    train = runs["train_bf16"]
    overrides = [a for a in train[4:] if not a.startswith("hydra.")]
    cfg = compose_run(overrides, tmp_path / "run")
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer.precision == "bf16-mixed"
    assert cfg.trainer.max_epochs == (1 if quick == "true" else 3) and "report" not in cfg
