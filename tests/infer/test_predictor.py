"""retina.infer.predictor, retina.export.meta and retina.predict: the errors a user sees
for bad input (the runs on trained models are in e2e/test_export.py)."""

import json

import pytest
import torch

from retina.export.meta import FORMAT_VERSION, MARKER, ExportMeta
from retina.infer.predictor import image_list
from retina.predict import main as predict_main


@pytest.mark.parametrize("images, message", [
    (torch.zeros(3, 8, 8, dtype=torch.uint8), r"expected a uint8 batch \(B, 3, H, W\), got \(3, 8, 8\)"),
    ([torch.zeros(3, 8, 8, dtype=torch.uint8), torch.zeros(3, 8, 8)],
     r"image 1: expected a uint8 RGB tensor \(3, H, W\), got torch.float32 \(3, 8, 8\)"),
    ([torch.zeros(1, 8, 8, dtype=torch.uint8)], r"image 0: .* got torch.uint8 \(1, 8, 8\)"),
    (["photo.png"], "image 0: expected a uint8 RGB tensor .* got str"),
])
def test_bad_images_are_named(images, message):
    with pytest.raises(ValueError, match=message):
        image_list(images)


def test_image_list_splits_a_batch():
    batch = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    assert [tuple(i.shape) for i in image_list(batch)] == [(3, 8, 8), (3, 8, 8)]


def meta_json(**changes) -> str:
    meta = {"format": MARKER, "format_version": FORMAT_VERSION, "class_names": ["a"],
            "cat_ids": [1], "model": {"detector": {}, "coder": {}, "postprocess": {}}}
    return json.dumps({**meta, **changes})


@pytest.mark.parametrize("text, message", [
    ("{not json", "m.json: retina export metadata is not JSON"),
    (json.dumps({"format": "other"}), "m.json is not retina export metadata"),
    (meta_json(format_version=99), "m.json has export format version 99; this retina .* reads"),
    (meta_json(model={"detector": {}}), r"m.json: retina export metadata lacks \['coder', 'postprocess'\]"),
    (meta_json(cat_ids=[1, 2]), "m.json: class_names and cat_ids differ in length"),
])
def test_bad_metadata_is_named(text, message):
    with pytest.raises(ValueError, match=message):
        ExportMeta.from_json(text, "m.json")


def test_predict_without_a_model_names_the_key(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        predict_main([f"images={tmp_path}", f"out={tmp_path / 'out'}"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1
    assert err.startswith("error: missing model=... (example: retina predict model=")
    assert not (tmp_path / "out").exists()


def test_predict_with_a_missing_model_file_names_it(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        predict_main([f"model={tmp_path / 'gone.onnx'}", f"images={tmp_path}",
                      f"out={tmp_path / 'out'}"])
    assert exit_info.value.code == 2 and "gone.onnx: no such file" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
