"""The command line (retina.cli, retina.options, the ``retina`` command): one key=value grammar
where a name means the same in every command, a short --help made from the option
definitions, and every mistake one line, exit code 2, before anything runs or is written."""

import dataclasses
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from retina import cli, options
from retina.__main__ import main as retina
from retina.training.config import ROOT

KEY_VALUE = [n for n, c in cli.COMMANDS.items() if c.options]
# what each key=value command needs at least
REQUIRED = {"eval": "model=...", "export": "model=...", "report": "ann=..., results=..., out=...",
            "parity": "model=...", "export-speed": "model=...",
            "predict": "model=..., images=..., out=...", "tile": "format=..., out=..."}
SHARED = {"model": options.model, "out": lambda: options.out(None, ""), "device": options.device,
          "conf": lambda: options.conf(None), "iou": options.iou, "max_det": options.max_det,
          "classes": options.classes}
OLD_NAMES = ("ckpt_path", "out_dir", "accelerator", "score_thresh", "nms_thresh", "draw_thresh")


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
    assert err.startswith("error: "), err
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
    assert len(out.splitlines()) <= 45
    # the module's own main (python -m MODULE --help) prints the same
    assert importlib.import_module(cmd.module).main(["-h"]) == 0
    assert capsys.readouterr().out == out


@pytest.mark.parametrize("name", KEY_VALUE)
def test_the_help_is_made_from_the_option_definitions(name):
    schema = cli.COMMANDS[name].options
    text = cli.COMMANDS[name].help()
    for field in dataclasses.fields(schema):
        rules = options.rules_of(schema)[field.name]
        assert f"\n  {field.name}=" in text, field.name
        assert rules.help and rules.help.split()[0] in text, field.name


def test_a_name_means_the_same_in_every_command():
    # the shared options keep one definition: the same rules wherever they appear
    for name in KEY_VALUE:
        rules = options.rules_of(cli.COMMANDS[name].options)
        assert not set(rules) & set(OLD_NAMES), name
        for option, make in SHARED.items():
            if option in rules:
                shared = make().metadata[options.RULES]
                got = rules[option]
                assert (got.aliases, got.low, got.high, got.pattern, got.exists) == (
                    shared.aliases, shared.low, shared.high, shared.pattern, shared.exists), (
                    name, option)
    used = {o for n in KEY_VALUE for o in options.rules_of(cli.COMMANDS[n].options)}
    assert {"model", "out", "device", "conf", "iou", "max_det", "classes"} <= used


def test_the_help_of_the_other_commands_names_every_option():
    # bench and convert write their help by hand around their subcommands
    from retina.bench.__main__ import AccuracyOptions, ServeOptions, SpeedOptions
    from retina.data.to_coco import ConvertOptions

    for schema, name in [(SpeedOptions, "bench"), (AccuracyOptions, "bench"),
                         (ServeOptions, "bench"), (ConvertOptions, "convert")]:
        fields = dataclasses.fields(schema)
        assert not [f.name for f in fields if f"{f.name}=" not in cli.COMMANDS[name].help()]


def test_eval_help_lists_its_options_not_the_training_groups(capsys):
    assert retina(["eval", "--help"]) == 0
    out = capsys.readouterr().out
    assert "model=FILE" in out and "optim" not in out and "loss=" not in out


@pytest.mark.parametrize("name", REQUIRED)
def test_a_missing_option_is_one_line(name, capsys):
    main = importlib.import_module(cli.COMMANDS[name].module).main
    assert exit_of(main, []) == 2
    one_line_error(capsys, f"missing {REQUIRED[name]}", f"(example: retina {name} ")


@pytest.mark.parametrize(("argv", "words"), [
    (["export", "model=MODEL", "format=tflite"],
     ["format=tflite: not one of safetensors, torchscript, onnx"]),
    (["export", "model=MODEL", "format=onx"], ["(did you mean onnx?)"]),
    (["predict", "model=MODEL", "images=.", "out=o", "conf=1.5"],
     ["conf=1.5: must be between 0 and 1"]),
    (["predict", "model=MODEL", "images=.", "out=o", "max_det=ten"],
     ["max_det=ten: expected a whole number, e.g. max_det=10"]),
    (["predict", "model=MODEL", "images=.", "out=o", "device=gpux"],
     ["device=gpux: expected auto, cpu, cuda or cuda:N"]),
    (["predict", "model=MODEL", "images=.", "out=o", "confidence=0.3"],
     ["unknown option 'confidence' (did you mean conf?)"]),
    (["predict", "model=MODEL", "images=.", "out=o", "verbose"],
     ["expected key=value, got 'verbose'"]),
    (["eval", "model=nothere.ckpt"], ["model=nothere.ckpt: no such file"]),
    (["eval", "model=MODEL", "data=cocoo"], ["data=cocoo: no such data config (did you mean "
                                            "coco?)"]),
    (["eval", "model=MODEL", "report.score_tresh=0.3"],
     ["unknown key report.score_tresh (did you mean report.score_thresh?)"]),
    (["eval", "model=MODEL", "report.worst_images=all"],
     ["report.worst_images=all: expected a whole number, e.g. report.worst_images=10"]),
    (["eval", "model=MODEL", "data=voc"], ["data=voc needs data.root=..."]),
    (["parity", "model=MODEL", "ann=nothere.json"], ["ann=nothere.json: no such file"]),
    (["tile", "format=voc", "out=o", "root=TESTS"], ["root=", "no such folder (it is a file)"]),
])
def test_a_bad_option_is_one_line_before_anything_runs(argv, words, capsys,
                                                       looks_like_checkpoint):
    model = str(looks_like_checkpoint)
    argv = [a.replace("MODEL", model).replace("TESTS", str(ROOT / "tests" / "__init__.py"))
            for a in argv]
    main = importlib.import_module(cli.COMMANDS[argv[0]].module).main
    assert exit_of(main, argv[1:]) == 2
    one_line_error(capsys, *words)


def test_old_option_names_still_work_with_a_note(capsys, looks_like_checkpoint, monkeypatch):
    monkeypatch.setattr(cli, "_NOTED", set())  # a note is printed once per process
    model = str(looks_like_checkpoint)
    argv = [f"ckpt_path={model}", "score_thresh=0.3", "nms_thresh=0.4"]
    opts, _ = cli.parse_command("export", argv)
    assert (opts.model, opts.conf, opts.iou) == (model, 0.3, 0.4)
    err = capsys.readouterr().err
    assert "note: ckpt_path= is now model= (the old name goes in retina 0.3)" in err
    assert "note: score_thresh= is now conf=" in err and "note: nms_thresh= is now iou=" in err
    cli.parse_command("export", argv)
    assert capsys.readouterr().err == ""  # once


def test_eval_passes_data_and_report_keys_on(looks_like_checkpoint):
    opts, prefixed = cli.parse_command("eval", [f"model={looks_like_checkpoint}", "data=coco",
                                                "data.val_ann=a.json", "+data.root=r",
                                                "report.score_thresh=0.5", "device=cpu"])
    assert opts.data == "coco" and opts.device == "cpu"
    assert prefixed == ["data.val_ann=a.json", "data.root=r", "report.score_thresh=0.5"]


def test_device_means_the_same_for_torch_and_lightning():
    assert cli.torch_device("cpu") == "cpu" and cli.torch_device("cuda:1") == "cuda:1"
    assert cli.torch_device("gpu") == "cuda"
    assert cli.lightning_device("cuda:1") == ("gpu", [1])
    assert cli.lightning_device("cpu") == ("cpu", 1)
    assert cli.lightning_device("auto") == ("auto", 1)


# ---------------------------------------------------------------- retina train (Hydra)

@pytest.mark.parametrize(("argv", "words"), [
    (["trainer.max_epochs=ten"], ["trainer.max_epochs=ten: expected a whole number, e.g. "
                                  "trainer.max_epochs=30"]),
    (["model=gfll"], ["model=gfll: no such model config (did you mean gfl?)"]),
    (["experiment=neon_retinan"], ["(did you mean neon_retinanet?)"]),
    (["trainer.max_epocs=3"], ["unknown key trainer.max_epocs (did you mean "
                               "trainer.max_epochs?)"]),
    (["loss.gamma=2"], ["loss.gamma: not a setting of this run's loss=gfl; loss=focal and "
                        "loss=softmax_focal have it"]),
    (["data=yolo", "data.root=/nonexistent"], ["data.root=/nonexistent: no such folder"]),
    (["data=coco"], ["data=coco needs data.root=DIR (the COCO 2017 layout) or "
                     "data.train_ann=FILE"]),
    (["data.batch_size=0"], ["data.batch_size=0: must be at least 1"]),
    (["optim.lr=-1"], ["optim.lr=-1: must be at least 0"]),
    (["model.init_from=nothere.ckpt"], ["model.init_from=nothere.ckpt: no such file"]),
    (["device=gpux"], ["device=gpux: expected auto, cpu, cuda or cuda:N"]),
    (["-m", "loss.gamma=0,two", "experiment=neon_retinanet"],
     ["loss.gamma=two: expected a number"]),
    (["data=voc"], ["missing data.root", "retina train data=voc data.root=DIR"]),
])
def test_train_mistakes_are_one_line_before_hydra_starts(argv, words, capsys):
    assert exit_of(retina, ["train", *argv]) == 2
    one_line_error(capsys, *words)


@pytest.mark.parametrize("experiment", ["retinanet_r50_coco_tv", "retinanet_r50_v2_coco_tv",
                                        "retinanet_r50_coco_mmdet", "gfl_r50_coco_mmdet"])
def test_a_key_an_experiment_requires_is_named_though_a_group_sets_it(experiment, capsys):
    # the model group's init_from: null would win over an experiment's `???` in the merge
    assert exit_of(retina, ["train", f"experiment={experiment}"]) == 2
    one_line_error(capsys, "missing model.init_from", f"retina train experiment={experiment} "
                   "model.init_from=converted/tv_v1/model.ckpt")
    assert cli.missing_keys("train", [f"experiment={experiment}", "model.init_from=m.ckpt"],
                            cli.COMMANDS["train"].filled) == []


def test_good_train_command_lines_pass_and_device_becomes_lightnings():
    assert cli.missing_keys("train", []) == ["model.detector.head.num_classes"]  # from the data
    assert cli.check_hydra_args("train", []) == []
    assert cli.check_hydra_args("train", ["device=cuda:1", "trainer.max_epochs=3"]) == [
        "trainer.accelerator=gpu", "trainer.devices=[1]", "trainer.max_epochs=3"]
    for argv in (["-m", "loss.gamma=0,2", "experiment=neon_retinanet"],
                 ["-m", "hparams_search=focal_optuna", "experiment=neon_retinanet"],
                 ["--cfg", "job", "experiment=neon_retinanet", "loss.gamma=1.5"],
                 ["ckpt_path=last"], ["+data.extra_key=1"], ["~callbacks.ema"],
                 # lr 0: frozen weights; a negative alpha: no alpha weighting (torchvision's -1)
                 ["optim.lr=0", "experiment=neon_retinanet", "loss.alpha=-1"]):
        cli.check_hydra_args("train", argv)  # no error


def test_a_mistake_leaves_the_working_folder_empty(tmp_path):
    # the whole path, in fresh processes, from an empty folder
    for argv in (["eval", "accelerator=cpu"], ["train", "trainer.max_epochs=ten"],
                 ["export", "model=x.ckpt", "format=tflite"], ["train", "data=coco"]):
        run = python_m("retina", *argv, cwd=tmp_path)
        assert run.returncode == 2, run.stderr
        assert len(run.stderr.strip().splitlines()) <= 2, run.stderr  # a note, the error
    assert list(tmp_path.iterdir()) == []


def test_python_m_predict_help_exits_0(tmp_path):
    run = python_m("retina.predict", "--help", cwd=tmp_path)
    assert run.returncode == 0 and run.stdout.startswith("usage: retina predict model=FILE")


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
