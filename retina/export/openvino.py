"""OpenVINO IR: the ONNX graph converted by OpenVINO (``pip install 'retina-det[openvino]'``).

``model.xml`` (the graph) and ``model.bin`` (its weights) beside it, the metadata in the
model's ``rt_info["retina"]``; the same inputs and outputs as the ONNX graph
(``retina.export.graph``). Weights are stored in float32 (OpenVINO would halve them by
default): ``precision=fp16`` stores them in float16 (for GPUs; the CPU plugin computes in
float32 or, on CPUs with AMX / AVX512-BF16, in bf16 unless told otherwise:
``retina.infer.runtimes.load_openvino`` tells it float32 for a float32 model).

INT8: NNCF's post-training quantization (``nncf.quantize``: FakeQuantize nodes with ranges
from the calibration images, the ``mixed`` preset: symmetric weights, asymmetric
activations), the pre- and postprocess left in float32 for the reasons in
``retina.export.quantize`` (NNCF's ``ignored_scope``: every node outside the network's
scopes). Two settings away from NNCF's defaults, for accuracy (the NEON model's validation
mAP_50, float 0.3614, 2026-12-08):

- ``overflow_fix`` on every layer, not the first only: weights in 7 bits, as the ONNX
  export's and for the same reason (CPUs without VNNI sum pairs of u8 x s8 products in
  int16, which 8-bit weights overflow);
- the full bias correction, not the fast one (calibration takes about 20 s longer).

Defaults 0.3397; overflow fix alone 0.3432; full bias correction alone 0.3479; both 0.3577.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import tempfile
from pathlib import Path

from retina.export.calibration import Calibration
from retina.export.formats import Exportable, export_onnx, graph_input_size, onnx_meta
from retina.export.meta import ExportMeta
from retina.export.quantize import NETWORK_SCOPES

META_KEY = "retina"  # rt_info["retina"]: the ExportMeta JSON


def export_openvino(
    predictor: Exportable, out: str | Path, input_size: tuple[int, int] | None = None,
    opset: int = 18, resize: bool = True, precision: str = "fp32",
    calibration: Calibration | None = None,
) -> Path:
    """Write ``out`` (.xml) and its .bin: the ONNX graph converted, INT8 with
    ``calibration`` (module docstring)."""
    import onnx
    import openvino as ov

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_file = export_onnx(predictor, Path(tmp) / "graph.onnx", input_size, opset, resize)
        meta = ExportMeta.from_json(onnx_meta(onnx.load(str(onnx_file))), onnx_file)
        model = ov.convert_model(str(onnx_file))
    if calibration is not None:
        model = quantize_openvino(model, calibration, graph_input_size(predictor, input_size))
        meta.source = {**meta.source, "quantize": {
            "type": "int8", "tool": f"nncf {nncf_version()}", "preset": "mixed",
            "calibration_images": len(calibration), "overflow_fix": "all layers",
            "bias_correction": "full"}}
    if precision != "fp32":
        meta.source = {**meta.source, "precision": precision}
    model.set_rt_info(meta.to_json(), [META_KEY])
    ov.save_model(model, str(out), compress_to_fp16=precision == "fp16")
    return out


def quantize_openvino(model, calibration: Calibration, input_size: tuple[int, int]):
    """``model`` with its network quantized to INT8 by NNCF."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    nncf.set_log_level(logging.ERROR)
    outside = [op.get_friendly_name() for op in model.get_ordered_ops()
               if not op.get_friendly_name().startswith(NETWORK_SCOPES)
               and op.get_type_name() not in ("Parameter", "Result", "Constant")]
    dataset = nncf.Dataset(list(calibration.batches(input_size)))
    with contextlib.redirect_stdout(sys.stderr):  # its progress bars: stdout names the file
        return nncf.quantize(model, dataset, subset_size=len(calibration),
                             preset=nncf.QuantizationPreset.MIXED, fast_bias_correction=False,
                             ignored_scope=nncf.IgnoredScope(names=outside, validate=False),
                             advanced_parameters=AdvancedQuantizationParameters(
                                 overflow_fix=OverflowFix.ENABLE))


def nncf_version() -> str:
    import nncf

    return nncf.__version__
