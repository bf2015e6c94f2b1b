"""The INT8 export's calibration images and the checks of an export's options, before
anything is exported (the exports themselves: e2e/test_fast_cpu.py)."""

import pytest
from PIL import Image

from retina.export.calibration import Calibration
from retina.export.formats import check_export, output_path


def write_images(folder, n, size=(30, 20)):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", size, (i, i, i)).save(folder / f"{i:02d}.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_images_are_evenly_spaced_over_the_folder(tmp_path):
    folder = write_images(tmp_path / "train", 10)
    picked = Calibration.from_folder(folder, 4)
    # linspace(0, 9, 4) = 0, 3, 6, 9
    assert [p.name for p in picked.images] == ["00.png", "03.png", "06.png", "09.png"]
    assert len(Calibration.from_folder(folder, 50)) == 10  # all there are
    batches = list(picked.batches((8, 12)))
    assert [b.shape for b in batches] == [(1, 3, 8, 12)] * 4 and batches[0].dtype == "uint8"
    assert int(batches[1].max()) == 3  # image 03 is gray 3: the pixels come through


@pytest.mark.parametrize("make, message", [
    (lambda tmp: tmp / "gone", "calib=.*gone: no such folder"),
    (lambda tmp: (tmp / "empty").mkdir() or tmp / "empty", "calib=.*empty: no images in it"),
])
def test_a_bad_calibration_folder_is_named(tmp_path, make, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        Calibration.from_folder(make(tmp_path))


CALIB = Calibration(())


@pytest.mark.parametrize("fmt, precision, quantize, calibration, message", [
    ("safetensors", "fp16", None, None, "precision=fp16: format=safetensors cannot hold it"),
    ("onnx", "bf16", None, None, "precision=bf16: format=onnx cannot hold it; formats with "
                                 "bf16: torchscript"),
    ("torchscript", "fp32", "int8", CALIB, "quantize=int8: format=torchscript cannot hold it"),
    ("onnx", "fp16", "int8", CALIB, "quantize=int8 quantizes the fp32 network"),
    ("onnx", "fp32", "int8", None, "quantize=int8 needs calib=DIR"),
    ("onnx", "fp32", "int4", CALIB, "quantize=int4: expected int8"),
])
def test_combinations_no_export_writes_are_one_line(fmt, precision, quantize, calibration,
                                                    message):
    with pytest.raises(ValueError, match=message):
        check_export(fmt, precision, quantize, calibration)


def test_allowed_combinations_pass():
    for fmt, precision, quantize in (("onnx", "fp16", None), ("torchscript", "bf16", None),
                                     ("openvino", "fp16", None), ("onnx", "fp32", "int8"),
                                     ("openvino", "fp32", "int8")):
        check_export(fmt, precision, quantize, CALIB if quantize else None)


def test_openvino_files_are_xml(tmp_path):
    assert output_path("openvino", tmp_path / "model").name == "model.xml"
    with pytest.raises(ValueError, match="out=.*model.onnx: .onnx is the suffix of onnx files"):
        output_path("openvino", tmp_path / "model.onnx")
