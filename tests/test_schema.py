"""retina.schema: saved files name classes by registered names, through one table."""

import json
import logging

import pytest
from hydra.utils import get_object
from omegaconf import OmegaConf

from retina import schema
from retina.cli import CONF_DIR
from retina.model.gfl_head import GFLHead
from retina.schema import (
    NAME_KEY,
    PATHS_OF_VERSION_2,
    REGISTRY,
    SchemaError,
    from_saved,
    load_model_config,
    load_run_config,
    save_run_config,
    to_saved,
    unregistered_targets,
)
from retina.training.checkpoint import module_from_checkpoint, run_config_json
from retina.training.config import compose_run

EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))


class MovedGFLHead(GFLHead):
    """GFLHead as if it had moved to another module."""


def conf_targets() -> list[str]:
    """Every ``_target_`` of the package in retina/conf (Hydra's own node aside)."""
    found = []

    def walk(node):
        if isinstance(node, dict):
            target = node.get("_target_")
            if isinstance(target, str) and target.startswith("retina."):
                found.append(target)
            for key, value in node.items():
                if key != "hydra":
                    walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for path in sorted(CONF_DIR.rglob("*.yaml")):
        walk(OmegaConf.to_container(OmegaConf.load(path)))
    return found


def test_every_class_the_configs_name_is_registered():
    targets = conf_targets()
    assert len(set(targets)) >= 20
    assert sorted(set(targets) - set(REGISTRY.values())) == []


def test_every_registered_name_builds_something():
    for name, target in REGISTRY.items():
        assert callable(get_object(target)), name
        kind, _, short = name.partition("/")
        assert kind and short, name


def test_the_frozen_paths_of_version_2_name_registered_classes():
    assert set(PATHS_OF_VERSION_2.values()) <= set(REGISTRY)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_a_run_config_is_saved_without_import_paths_and_read_back(experiment, tmp_path):
    cfg = compose_run([f"experiment={experiment}"], tmp_path / "run")
    run = OmegaConf.to_container(cfg, resolve=True)
    run.pop("hydra")
    saved = save_run_config(run)
    assert saved["schema_version"] == schema.SCHEMA_VERSION
    assert "retina." not in json.dumps(saved).replace("retina.conf", "")
    assert saved["model"]["detector"]["head"][NAME_KEY].startswith("head/")
    assert load_run_config(json.loads(json.dumps(saved))) == run


def test_other_libraries_classes_keep_their_import_paths():
    node = {"_target_": "torch.optim.AdamW", "lr": 0.1}
    assert to_saved(node) == node and from_saved(node) == node


def test_an_unknown_name_is_one_line_naming_it_and_the_known_ones():
    with pytest.raises(SchemaError, match=r"model.ckpt names 'head/yolo', which this retina .* "
                                          r"does not know; it knows head/retinanet, head/gfl$"):
        from_saved({"head": {NAME_KEY: "head/yolo"}}, "model.ckpt")


@pytest.mark.parametrize("version", [0, 4, "3"])
def test_an_unknown_schema_version_is_refused(version):
    with pytest.raises(SchemaError, match=rf"f.json has schema version {version!r}; this retina "
                                          r".* reads versions \[1, 2, 3\]"):
        load_model_config({}, version, "f.json")
    with pytest.raises(SchemaError, match="schema version"):
        load_run_config({"schema_version": version, "model": {}}, "f.json")


def test_moving_a_class_is_one_line_of_the_registry(monkeypatch, tmp_path):
    # a checkpoint of 2026-12-07 (import paths) and one written today (names) both follow
    # the registry to the class's new place
    from tests.test_legacy import legacy_checkpoint, resaved

    old = legacy_checkpoint("v2_gfl", tmp_path)
    today = resaved(old)
    monkeypatch.setitem(REGISTRY, "head/gfl", f"{__name__}.MovedGFLHead")
    for path in (old, today):
        assert type(module_from_checkpoint(path).detector.head) is MovedGFLHead


def test_an_unregistered_class_of_the_package_is_saved_by_path_with_a_warning(caplog, tmp_path):
    cfg = compose_run([], tmp_path / "run")
    cfg.model.detector.backbone._target_ = "retina.model.backbone.resnet_unregistered"
    with caplog.at_level(logging.WARNING, logger="retina.training.checkpoint"):
        saved = json.loads(run_config_json(cfg))
    assert saved["model"]["detector"]["backbone"]["_target_"] == (
        "retina.model.backbone.resnet_unregistered")
    assert "resnet_unregistered has no registered name" in caplog.text
    assert unregistered_targets(saved) == ["retina.model.backbone.resnet_unregistered"]


def test_module_from_checkpoint_resaves_in_todays_schema(tmp_path):
    from tests.test_legacy import legacy_checkpoint

    module = module_from_checkpoint(legacy_checkpoint("v1_retinanet", tmp_path))
    saved = json.loads(module.hparams.run_config)
    assert saved["schema_version"] == schema.SCHEMA_VERSION
    assert saved["model"][NAME_KEY] == "module/detection"


def test_the_package_version_is_the_installed_distributions():
    import importlib.metadata

    assert schema.package_version() == importlib.metadata.version("retina-det") != "unknown"
