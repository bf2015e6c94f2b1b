"""The command line (retina.cli, the ``retina`` command): one key=value grammar, a short --help
with an example for every command, and a missing or wrong option as one line, exit code 2."""

import dataclasses
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from retina import cli
from retina.__main__ import main as retina
from retina.training.config import ROOT

# the Hydra commands with a required key (train has none: it trains the NEON default)
REQUIRED = {"eval": "ckpt_path", "export": "ckpt_path", "report": "ann, results, out",
            "parity": "ckpt_path", "export-speed": "ckpt_path"}


def python_m(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m ARGS`` from ``cwd`` with this checkout importable."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def exit_of(fn, *args) -> int:
    with pytest.raises(SystemExit) as exit_info:
        fn(*args)
    return exit_info.value.code


def one_line_error(capsys, *words: str) -> str:
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: ") and "(example: retina " in err
    assert all(w in err for w in words), err
    return err


def test_retina_help_lists_every_command_with_an_example(capsys):
    assert retina(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: retina COMMAND")
    assert all(f"\n  {name} " in out for name in cli.COMMANDS)
    assert "examples:\n  retina train" in out


def test_retina_version_names_the_distribution(capsys):
    assert retina(["--version"]) == 0
    assert capsys.readouterr().out.startswith("retina-det ")


def test_retina_without_a_command_prints_usage_and_exits_2(capsys):
    assert retina([]) == 2
    assert "usage: retina COMMAND" in capsys.readouterr().err


def test_an_unknown_command_is_one_line_with_a_suggestion(capsys):
    assert exit_of(retina, ["trian"]) == 2
    one_line_error(capsys, "unknown command 'trian' (did you mean train?)")


@pytest.mark.parametrize("name", cli.COMMANDS)
def test_every_command_has_a_short_help_with_an_example(name, capsys):
    cmd = cli.COMMANDS[name]
    assert retina([name, "--help"]) == 0  # without importing the module
    out = capsys.readouterr().out
    assert out.startswith(f"usage: retina {name}") and "\nexample" in out
    assert len(out.splitlines()) <= 30
    # the module's own main (python -m MODULE --help) prints the same
    assert importlib.import_module(cmd.module).main(["-h"]) == 0
    assert capsys.readouterr().out == out


def test_eval_help_lists_its_options_not_the_training_groups(capsys):
    # Hydra's own --help of eval listed every training group (model, loss, optim, ...)
    assert retina(["eval", "--help"]) == 0
    out = capsys.readouterr().out
    assert "ckpt_path=FILE" in out and "optim" not in out and "loss=" not in out


@pytest.mark.parametrize("schema, name", [
    ("retina.predict:PredictConfig", "predict"),
    ("retina.bench.__main__:SpeedOptions", "bench"),
    ("retina.bench.__main__:AccuracyOptions", "bench"),
    ("retina.data.to_coco:ConvertOptions", "convert"),
    ("retina.sweeps.report:ReportOptions", "sweep-report"),
])
def test_the_help_names_every_option(schema, name):
    module, cls = schema.split(":")
    options = dataclasses.fields(getattr(importlib.import_module(module), cls))
    assert not [f.name for f in options if f"{f.name}=" not in cli.COMMANDS[name].usage]


@pytest.mark.parametrize("name", REQUIRED)
def test_hydra_commands_name_a_missing_key_in_one_line(name, capsys):
    main = importlib.import_module(cli.COMMANDS[name].module).main
    assert exit_of(main, []) == 2
    one_line_error(capsys, f"missing {REQUIRED[name]}", f"retina {name} ")


def test_every_hydra_command_with_a_required_key_is_checked():
    assert set(REQUIRED) == {n for n, c in cli.COMMANDS.items() if c.config} - {"train", "check"}


def test_a_missing_key_leaves_no_run_directory(tmp_path):
    # the whole path, in a fresh process, from another directory
    run = python_m("retina", "eval", "accelerator=cpu", cwd=tmp_path)
    assert run.returncode == 2
    assert run.stderr.strip() == (
        "error: missing ckpt_path (example: retina eval accelerator=cpu "
        f"ckpt_path={cli.CKPT})")
    assert list(tmp_path.iterdir()) == []


def test_python_m_predict_help_exits_0(tmp_path):
    run = python_m("retina.predict", "--help", cwd=tmp_path)
    assert run.returncode == 0 and run.stdout.startswith("usage: retina predict model=FILE")


def test_keys_a_group_or_experiment_leaves_unset_are_named(capsys):
    assert exit_of(retina, ["train", "data=voc"]) == 2
    one_line_error(capsys, "missing data.root", "retina train data=voc data.root=DIR")


@pytest.mark.parametrize("experiment", ["retinanet_r50_coco_tv", "retinanet_r50_v2_coco_tv",
                                        "retinanet_r50_coco_mmdet", "gfl_r50_coco_mmdet"])
def test_a_key_an_experiment_requires_is_named_though_a_group_sets_it(experiment, capsys):
    # the model group's init_from: null would win over an experiment's `???` in the merge
    assert exit_of(retina, ["train", f"experiment={experiment}"]) == 2
    one_line_error(capsys, "missing model.init_from", f"retina train experiment={experiment} "
                   "model.init_from=converted/tv_v1/model.ckpt")
    assert cli.missing_keys("train", [f"experiment={experiment}", "model.init_from=m.ckpt"],
                            cli.COMMANDS["train"].filled) == []


def test_keys_the_command_fills_itself_are_not_missing():
    # the head's class count comes from the data
    assert cli.missing_keys("train", []) == ["model.detector.head.num_classes"]
    cli.check_hydra_args("train", [])  # no error
    assert cli.missing_keys("eval", ["ckpt_path=x.ckpt"]) == []


@pytest.mark.parametrize("argv", [
    ["-m", "ckpt_path=a.ckpt,b.ckpt"],  # a sweep: Hydra's own command line
    ["--cfg", "job"],
    ["trainer.max_epoch=3"],  # a bad override: Hydra's message names it
])
def test_arguments_only_hydra_understands_are_left_to_hydra(argv):
    assert cli.missing_keys("eval", argv) == []


def test_key_value_options_are_parsed_and_checked(capsys):
    from retina.bench.__main__ import SpeedOptions
    from retina.predict import PredictConfig, main

    opts = cli.parse_options(SpeedOptions, ["sizes=[256,320]", "quick=true"], "e.g.")
    assert opts.sizes == [256, 320] and opts.quick and opts.batch == 2
    args = ["model=m.onnx", "images=dir", "out=o"]
    assert cli.parse_options(PredictConfig, args, "e.g.").batch_size == 4
    for argv, words in [
        ([*args, "drw=true"], ["unknown option 'drw' (did you mean draw?)"]),
        ([*args, "batch_size=abc"], ["batch_size: Value 'abc'"]),
        ([*args, "verbose"], ["expected key=value, got 'verbose'"]),
        (args[1:], ["missing model=..."]),
    ]:
        assert exit_of(main, argv) == 2
        one_line_error(capsys, *words)


def test_bench_and_sweep_report_take_the_same_grammar(capsys):
    from retina.bench.__main__ import main as bench
    from retina.sweeps.report import main as sweep_report

    assert exit_of(bench, ["speed", "--quick"]) == 2
    one_line_error(capsys, "expected key=value, got '--quick'")
    assert exit_of(bench, ["sped"]) == 2
    one_line_error(capsys, "unknown benchmark 'sped'")
    assert exit_of(sweep_report, []) == 2
    one_line_error(capsys, "expected the multirun directory first")


def test_the_commands_find_the_configs_as_a_package():
    # how an installed package finds them (tests/e2e/test_install.py checks a real wheel)
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_module("retina.conf", version_base="1.3"):
        assert compose("train").task_name == "train"
    assert cli.CONF_PKG == "pkg://retina.conf"
    assert (ROOT / "conf").resolve() == cli.CONF_DIR  # the checkout's conf/ is the same folder
