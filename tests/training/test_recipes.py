"""Recipes by kind of data (retina.conf.with_recipe): NEON keeps its aerial recipe, exactly as
composed before recipes existed; COCO, VOC and YOLO data get the photo recipe; a named
experiment wins; the run's log says which recipe, why, and how to choose the other."""

import json
import subprocess
import sys

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from retina.cli import CONF_DIR
from retina.conf import describe_recipe, with_recipe
from retina.training.config import ROOT, compose_run

# `retina train`'s config composed at cd9cd86, before recipes by data (tests/fixtures/configs/)
BEFORE = json.loads((ROOT / "tests/fixtures/configs/train_cd9cd86.json").read_text())


def composed(overrides: list[str]) -> tuple[dict, dict]:
    """What ``retina train OVERRIDES`` composes (the recipe added as the command adds it), and
    its group choices."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=with_recipe(overrides), return_hydra_config=True)
    choices = dict(cfg.hydra.runtime.choices)
    cfg = OmegaConf.to_container(cfg, resolve=False)
    cfg.pop("hydra")
    GlobalHydra.instance().clear()
    return cfg, choices


def test_retina_train_on_neon_is_unchanged():
    # `make train` is `retina train`: the default, the same whether data=neon_trees is named
    # or the aerial recipe is, and the same as before recipes by data existed
    for overrides in ([], ["data=neon_trees"], ["experiment=aerial"]):
        cfg = composed(overrides)[0]
        # the one group added since, and off by default: early stopping
        assert cfg.pop("early_stop") == {"patience": None, "min_delta": 0.0}
        assert cfg == BEFORE["(none)"]
    assert with_recipe([]) == [] and with_recipe(["data=neon_trees"]) == ["data=neon_trees"]


@pytest.mark.parametrize("data", ["coco", "voc", "yolo"])
def test_photo_data_gets_the_photo_recipe(data):
    cfg, choices = composed([f"data={data}", "data.root=DIR"])
    assert choices["experiment"] == "photo" and choices["model/backbone"] == "resnet50"
    d = cfg["data"]
    assert d["size"] is None and (d["min_size"], d["max_size"]) == (800, 1333)  # aspect kept
    assert d["rot90"] == 0.0 and d["vflip"] == 0.0 and d["hflip"] == 0.5  # photos have an up
    assert d["scale_jitter"] == [0.8, 1.0]  # training: shorter side 640-800
    assert cfg["model"]["detector"]["backbone"]["weights"] == "IMAGENET1K_V1"
    assert cfg["trainer"]["max_epochs"] == 12 and cfg["trainer"]["check_val_every_n_epoch"] == 1
    assert cfg["sched"]["milestones"] == pytest.approx([8 / 12, 11 / 12], abs=1e-6)  # the 1x
    assert cfg["callbacks"]["ema"] is None


def test_a_named_experiment_or_search_wins_over_the_data():
    cfg, choices = composed(["data=voc", "data.root=DIR", "experiment=aerial"])
    assert choices["experiment"] == "aerial"
    assert cfg["data"]["size"] == 448 and cfg["data"]["rot90"] == 0.5
    assert cfg["data"]["_target_"] == "retina.data.to_coco.converted_datamodule"  # still VOC
    for named in (["experiment=neon_retinanet"], ["+experiment=photo"],
                  ["hparams_search=focal_optuna"]):
        assert with_recipe(["data=coco", *named]) == ["data=coco", *named]


def test_a_sweep_over_data_gets_a_recipe_only_when_they_agree():
    assert with_recipe(["-m", "data=coco,voc"]) == ["-m", "data=coco,voc", "experiment=photo"]
    assert with_recipe(["data=voc", "data.root=D", "--cfg", "job"]) == [
        "data=voc", "experiment=photo", "data.root=D", "--cfg", "job"]
    assert with_recipe(["-m", "data=coco,neon_trees"]) == ["-m", "data=coco,neon_trees"]


def test_compose_run_gets_the_recipe_of_the_command(tmp_path):
    assert compose_run(["data=yolo", "data.root=DIR"], tmp_path / "a").data.size is None
    assert compose_run(["data=yolo", "data.root=DIR", "experiment=aerial"],
                       tmp_path / "b").data.size == 448


def test_the_log_line_says_which_recipe_why_and_the_other():
    line = describe_recipe("photo", "voc")
    assert line.startswith("recipe: photo (experiment=photo), the default for data=voc")
    assert "no quarter turns" in line and line.endswith("experiment=aerial")
    line = describe_recipe("neon_gfl", "neon_trees")
    assert line.startswith("recipe: aerial (experiment=neon_gfl), the default for data=")
    assert line.endswith("experiment=photo")
    assert describe_recipe("aerial", None).startswith("recipe: aerial (experiment=aerial), "
                                                      "the default for data=neon_trees")
    line = describe_recipe("aerial", "coco")
    assert "chosen instead of data=coco's default (experiment=photo)" in line
    assert "experiment=retinanet_r50_1x, chosen instead" in describe_recipe("retinanet_r50_1x",
                                                                            "coco")


def test_retina_train_cfg_job_shows_the_photo_recipe(tmp_path):
    out = subprocess.run([sys.executable, "-m", "retina", "train", "data=voc",
                          f"data.root={tmp_path}", "--cfg", "job"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    cfg = yaml.safe_load(out.stdout)
    assert cfg["data"]["rot90"] == 0.0 and cfg["data"]["size"] is None
    assert (cfg["data"]["min_size"], cfg["data"]["max_size"]) == (800, 1333)
    assert cfg["model"]["detector"]["backbone"]["depth"] == 50
