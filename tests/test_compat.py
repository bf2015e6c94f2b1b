"""Old import paths keep working for one release, with a deprecation warning naming the new."""

import importlib
import subprocess
import sys
import warnings

import pytest

MOVED = [  # (old module, new module, an attribute)
    ("retina.export.predictor", "retina.infer.predictor", "Predictor"),
    ("retina.export.runtimes", "retina.infer.runtimes", "load"),
    ("retina.export.sliced", "retina.infer.sliced", "predict_scene"),
    ("retina.export.geo", "retina.infer.geo", "to_geojson"),
    ("retina.export.parity", "retina.infer.parity", "parity"),
    ("retina.export.speed", "retina.infer.speed", "speed"),
    ("retina.export", "retina.infer", "from_checkpoint"),
    ("retina.ops.tiles", "retina.ops.window_merge", "merge_windows"),
    ("retina.data.convert", "retina.data.to_coco", "converted_datamodule"),
]


@pytest.mark.parametrize(("old", "new", "name"), MOVED)
def test_an_old_path_gives_the_same_object_with_a_warning(old, new, name):
    with pytest.warns(DeprecationWarning, match=rf"{old}\.{name} moved to {new}\.{name}; the old "
                                                r"path goes in retina 0\.3"):
        obj = getattr(importlib.import_module(old), name)
    assert obj is getattr(importlib.import_module(new), name)


def test_what_did_not_move_imports_quietly_and_a_missing_name_is_an_attribute_error():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from retina.export import FORMATS, export  # noqa: F401
        for old in ("retina.export", "retina.export.predictor"):
            with pytest.raises(AttributeError, match=f"'{old}' has no attribute 'nothing'"):
                importlib.import_module(old).nothing  # noqa: B018


def test_an_old_command_module_says_where_it_went_and_runs_it():
    run = subprocess.run([sys.executable, "-m", "retina.data.convert", "--help"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0
    assert "retina.data.convert moved to retina.data.to_coco" in run.stderr
    assert "usage: retina convert" in run.stdout
