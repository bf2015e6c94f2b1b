"""retina.export.formats: the ONNX resize matches torch's, the file an export writes (exports
of trained models are in e2e/test_export.py)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from retina.export.formats import MIN_OPSET, _resize_aa_symbolic, output_path
from retina.export.graph import resize_uint8


def test_resize_in_onnx_matches_torch_within_one_level(tmp_path):
    class Resize(torch.nn.Module):
        def forward(self, x):
            return resize_uint8(x, (96, 96))

    torch.onnx.register_custom_op_symbolic("aten::_upsample_bilinear2d_aa", _resize_aa_symbolic,
                                           MIN_OPSET)
    x = torch.randint(0, 256, (1, 3, 50, 50), dtype=torch.uint8)
    path = tmp_path / "resize.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation note
        torch.onnx.export(Resize(), (x,), str(path), dynamo=False, opset_version=MIN_OPSET,
                          input_names=["x"], dynamic_axes={"x": {2: "h", 3: "w"}})
    session = ort.InferenceSession(str(path))
    for hw in ((50, 50), (96, 96), (300, 170)):  # up, same, down
        x = torch.randint(0, 256, (1, 3, *hw), dtype=torch.uint8)
        levels = np.abs(session.run(None, {"x": x.numpy()})[0] - resize_uint8(x, (96, 96)).numpy())
        assert levels.max() * 255 <= 1 + 1e-4 and (levels > 1e-6).mean() < 0.01


@pytest.mark.parametrize(("fmt", "out", "written"), [
    ("torchscript", "model_ts", "model_ts.pt"),  # no suffix: the format's
    ("torchscript", "model.v2", "model.v2.pt"),  # not one retina.load reads: added
    ("torchscript", "model.ts", "model.ts"),  # one retina.load reads as TorchScript: kept
    ("onnx", "out/model", "out/model.onnx"),
    ("onnx", "model.ONNX", "model.ONNX"),
    ("safetensors", "model", "model.safetensors"),
    ("safetensors", "model.json", "model.safetensors"),  # beside model.json
])
def test_an_export_writes_a_file_retina_load_reads(fmt, out, written):
    assert output_path(fmt, out) == Path(written)


def test_an_out_with_another_formats_suffix_is_an_error():
    with pytest.raises(ValueError, match=r"out=model\.onnx: \.onnx is the suffix of onnx files, "
                                         r"not of format=torchscript; use out=model\.pt"):
        output_path("torchscript", "model.onnx")
