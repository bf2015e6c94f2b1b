"""INT8 ONNX: static quantization of the network of an ONNX export with ONNX Runtime.

``quantize_static`` in QDQ format (QuantizeLinear / DequantizeLinear pairs around each
quantized tensor, which ONNX Runtime fuses into integer kernels, ``QLinearConv``): weights
int8 per output channel (symmetric), activations uint8 per tensor (asymmetric), their
ranges the min/max seen on training images (``retina.export.calibration``).

Weights take 7 bits of the 8 (``reduce_range``): on x86 CPUs without VNNI (AVX2 alone, as
on the project's machines) ONNX Runtime multiplies uint8 by int8 with an instruction that
adds pairs of products into int16, which overflows with full-range weights and corrupts
the sums. With 8-bit weights the NEON model lost 0.038 mAP_50 (0.3614 -> 0.3239); with 7
the loss was 0.002 (0.3592), at the same speed (2026-12-08). A file runs on any CPU, so
every export takes the 7 bits.

What stays float32, and why: every node outside the network (:data:`NETWORK_SCOPES`):

- the preprocess (uint8 -> float, the antialiased resize, the rounding to 8-bit levels,
  /255, the padding, the mean/std normalisation): it reproduces torchvision's eval resize
  to the pixel; quantized, the resize would move pixels by more than the one level the
  float graph allows, and it costs little;
- the postprocess (sigmoid, top-k, box decoding, clipping, NonMaxSuppression, padding
  the outputs): scores are compared with thresholds and ranked, boxes are pixels; 8-bit
  scores would tie and reorder, 8-bit coordinates would move boxes by whole pixels, and
  this part is a few percent of the time.

Inside the network every op ONNX Runtime quantizes is quantized (convolutions with their
ReLU / ReLU6, the FPN's adds and upsampling), the head's last convolutions included, as
OpenVINO's and ultralytics' detector recipes do: the 100 convolutions carry ~90 % of the
time (measured with ONNX Runtime's profiler on the NEON model), and leaving a convolution
float makes its neighbours dequantize around it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from retina.export.calibration import Calibration
from retina.export.formats import (
    Exportable,
    export_onnx,
    graph_input_size,
    onnx_meta,
    quiet_onnxruntime,
    set_onnx_meta,
)
from retina.export.meta import ExportMeta

# the network's nodes in the exported graph (the TorchScript exporter names each node by
# its module path): everything else is the pre- and postprocess
NETWORK_SCOPES = ("/detector/backbone/", "/detector/fpn/", "/detector/head/")


def outside_network(model) -> list[str]:
    """Names of the nodes of an ONNX ``model`` that are not in the network."""
    return [n.name for n in model.graph.node if not n.name.startswith(NETWORK_SCOPES)]


def export_onnx_int8(
    predictor: Exportable, out: str | Path, calibration: Calibration,
    input_size: tuple[int, int] | None = None, opset: int = 18, resize: bool = True,
) -> Path:
    """Export the float32 ONNX graph, then quantize its network to INT8 (module docstring).

    Returns:
        ``out``, an ONNX file with the same inputs, outputs and metadata as the float32
        export, and ``source.quantize`` = ``{"type": "int8", ...}``.
    """
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        """The calibration images as the graph's ``images`` input."""

        def __init__(self) -> None:
            self.batches = calibration.batches(graph_input_size(predictor, input_size))

        def get_next(self) -> dict | None:
            batch = next(self.batches, None)
            return None if batch is None else {"images": batch}

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(predictor, Path(tmp) / "fp32.onnx", input_size, opset, resize)
        model = onnx.load(str(fp32))
        with quiet_onnxruntime():  # its notes about initializers it removes
            quantize_static(
                str(fp32), str(Path(tmp) / "int8.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                per_channel=True, activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8, nodes_to_exclude=outside_network(model),
                calibrate_method=CalibrationMethod.MinMax, reduce_range=True)
        quantized = onnx.load(str(Path(tmp) / "int8.onnx"))
    info = {"type": "int8", "tool": f"onnxruntime {ort.__version__}", "format": "QDQ",
            "calibration_images": len(calibration), "weight_bits": 7}
    meta = ExportMeta.from_json(onnx_meta(model), fp32)
    meta.source = {**meta.source, "quantize": info}
    set_onnx_meta(quantized, meta)
    onnx.checker.check_model(quantized)
    onnx.save(quantized, str(out))
    return out
