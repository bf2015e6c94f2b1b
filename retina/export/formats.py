"""Writers of the export formats.

- safetensors: the Detector's weights (no pickle) + a JSON sidecar (``ExportMeta``).
- TorchScript: :class:`retina.export.graph.DetectionGraph` traced; metadata in the
  archive's ``extra/retina.json``.
- ONNX: the same graph through the TorchScript-based exporter (opset >= 18 for the
  antialiased Resize), checked with ``onnx.checker``; metadata as ``metadata_props``
  ``retina``. INT8 (``quantize="int8"``): ``retina.export.quantize``.
- OpenVINO IR (``.xml`` + ``.bin``): the ONNX graph converted by OpenVINO, metadata in its
  ``rt_info``; INT8 through NNCF (``retina.export.openvino``).

Graphs run the network in float32 unless ``precision`` says ``fp16`` (TorchScript, ONNX,
OpenVINO) or ``bf16`` (TorchScript: ONNX's Conv has no bfloat16): exports for GPUs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.util
import json
import warnings
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor

from retina.export.calibration import Calibration
from retina.export.graph import DetectionGraph
from retina.export.meta import ExportMeta
from retina.model.detector import Detector
from retina.model.fuse import fold_batchnorm
from retina.ops.postprocess import Postprocess
from retina.schema import KIND_OF_SUFFIX


class Exportable(Protocol):
    """What an export writes: a predictor's network, postprocess and metadata (a
    ``retina.infer.Predictor``)."""

    detector: Detector
    postprocess: Postprocess
    meta: ExportMeta


FORMATS = ("safetensors", "torchscript", "onnx", "openvino")
SUFFIXES = {"safetensors": ".safetensors", "torchscript": ".pt", "onnx": ".onnx",
            "openvino": ".xml"}
# the network's float type in a graph; which formats take it
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
PRECISION_FORMATS = {"fp32": FORMATS, "fp16": ("torchscript", "onnx", "openvino"),
                     "bf16": ("torchscript",)}
QUANTIZE_FORMATS = ("onnx", "openvino")  # quantize="int8"
META_FILE = "retina.json"  # TorchScript extra file / ONNX metadata key "retina"
OUTPUT_NAMES = ("boxes", "scores", "labels", "num_dets", "spread")
MIN_OPSET = 18  # Resize with antialias


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def output_path(fmt: str, out: str | Path) -> Path:
    """The file an export of format ``fmt`` to ``out`` writes: ``out`` when ``retina.load``
    reads its suffix as ``fmt``, else ``out`` with the format's suffix added (``model_ts`` ->
    ``model_ts.pt``, ``model.v2`` -> ``model.v2.pt``); safetensors: the ``.safetensors`` file
    (beside its ``.json``).

    Raises:
        ValueError: ``out`` ends in the suffix of another format (``model.onnx`` as TorchScript).
    """
    out = Path(out)
    kind = KIND_OF_SUFFIX.get(out.suffix.lower())
    if kind == fmt:
        return out.with_suffix(SUFFIXES[fmt]) if fmt == "safetensors" else out
    if kind is not None:
        raise ValueError(f"out={out}: {out.suffix} is the suffix of {kind} files, not of "
                         f"format={fmt}; use out={out.with_suffix(SUFFIXES[fmt])}")
    return out.with_name(out.name + SUFFIXES[fmt])


def sidecar_path(weights: str | Path) -> Path:
    """The JSON next to a safetensors file: ``model.safetensors`` -> ``model.json``."""
    return Path(weights).with_suffix(".json")


def export_safetensors(predictor: Exportable, out: str | Path) -> Path:
    """Write ``out`` (.safetensors, the Detector's state dict) and its JSON sidecar.

    Returns:
        the sidecar path; ``retina.load`` takes either file.
    """
    from safetensors.torch import save_file

    out = Path(out).with_suffix(".safetensors")
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in predictor.detector.state_dict().items()}
    save_file(state, str(out), metadata={"format": "pt", "sidecar": sidecar_path(out).name})
    sidecar = json.loads(predictor.meta.to_json())
    sidecar.update(weights=out.name, weights_sha256=sha256(out))
    sidecar_path(out).write_text(json.dumps(sidecar, indent=2))
    return sidecar_path(out)


def graph_input_size(predictor: Exportable, input_size: tuple[int, int] | None) -> tuple[int, int]:
    """(h, w) the graph resizes to: ``input_size``, else the model's square ``size``."""
    if input_size is not None:
        return int(input_size[0]), int(input_size[1])
    if predictor.meta.size is not None:
        return predictor.meta.size, predictor.meta.size
    raise ValueError(
        f"the model resizes by min_size={predictor.meta.min_size} / max_size="
        f"{predictor.meta.max_size} (aspect kept); TorchScript / ONNX graphs run at a fixed "
        "size: pass input_size=[H,W]"
    )


def build_graph(predictor: Exportable, input_size: tuple[int, int] | None = None,
                resize: bool = True, precision: str = "fp32") -> DetectionGraph:
    """The traceable graph of ``predictor`` at a fixed network input size, on CPU, its batch
    norms folded into the convolutions (``retina.model.fuse``); ``resize=False``: without
    the resize (images come at the input size); ``precision``: the network's float type."""
    h, w = graph_input_size(predictor, input_size)
    div = predictor.meta.size_divisible
    padded = (-(-h // div) * div, -(-w // div) * div)  # rounded up like collate
    detector = fold_batchnorm(predictor.detector).cpu()  # a copy
    with torch.no_grad():  # batch 2: GroupNorm refuses one value per group (1x1 P7, batch 1)
        cls_maps, _ = detector(torch.zeros(2, 3, *padded))
    anchors = detector.level_anchors(cls_maps)
    return DetectionGraph(detector, predictor.postprocess, anchors, (h, w), padded, resize,
                          DTYPES[precision]).eval()


def example_images(graph: DetectionGraph, batch_size: int = 2) -> Tensor:
    """Tracing input whose size differs from the network input (the resize must be traced);
    for a graph without resize, of the input size."""
    h, w = graph.input_size
    grow = (19, 7) if graph.resize else (0, 0)
    return torch.randint(0, 256, (batch_size, 3, h + grow[0], w + grow[1]), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(0))


def graph_meta(predictor: Exportable, graph: DetectionGraph, **source) -> ExportMeta:
    """The predictor's metadata with the graph's fixed network input size, and ``source``
    entries (precision, quantization) added to its ``source``."""
    precision = next(k for k, v in DTYPES.items() if v == graph.dtype)
    extra = {"precision": precision} if precision != "fp32" else {}
    return dataclasses.replace(predictor.meta, graph_input_size=list(graph.input_size),
                               source={**predictor.meta.source, **extra, **source})


def _trace_quietly(fn, *args, **kwargs):
    """Run an export while hiding tracer notes about values fixed by the network size
    (top-k sizes, level shapes): the graph's network input size is fixed by design."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*(legacy TorchScript-based ONNX|is deprecated)")
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
        warnings.filterwarnings("ignore", message="The feature will be removed")
        return fn(*args, **kwargs)


def export_torchscript(
    predictor: Exportable, out: str | Path, input_size: tuple[int, int] | None = None,
    precision: str = "fp32",
) -> Path:
    """Trace :class:`DetectionGraph` and save it with the metadata (see module docstring)."""
    graph = build_graph(predictor, input_size, precision=precision)
    with torch.no_grad():
        traced = _trace_quietly(torch.jit.trace, graph, example_images(graph), check_trace=False)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _trace_quietly(torch.jit.save, traced, str(out),
                   _extra_files={META_FILE: graph_meta(predictor, graph).to_json()})
    return out


def _resize_aa_symbolic(g, input, output_size, align_corners, scale_factors):
    """``aten::_upsample_bilinear2d_aa`` -> ONNX Resize(linear, antialias=1).

    ``exclude_outside=1`` renormalises the filter at the borders like torch / PIL.
    """
    from torch.onnx import symbolic_helper

    size = symbolic_helper._maybe_get_const(output_size, "is")
    corners = symbolic_helper._maybe_get_const(align_corners, "i")
    lead = g.op("Slice", g.op("Shape", input), g.op("Constant", value_t=torch.tensor([0])),
                g.op("Constant", value_t=torch.tensor([2])))  # (2,) B, C
    sizes = g.op("Concat", lead, g.op("Constant", value_t=torch.tensor(list(size))), axis_i=0)
    empty = g.op("Constant", value_t=torch.tensor([], dtype=torch.float32))
    return g.op("Resize", input, empty, empty, sizes, mode_s="linear", antialias_i=1,
                exclude_outside_i=1,
                coordinate_transformation_mode_s="align_corners" if corners else "half_pixel")


def export_onnx(
    predictor: Exportable, out: str | Path, input_size: tuple[int, int] | None = None,
    opset: int = MIN_OPSET, resize: bool = True, precision: str = "fp32",
) -> Path:
    """Export :class:`DetectionGraph` to ONNX with dynamic batch, height and width (with
    ``resize=False``: dynamic batch, the input size fixed).

    Uses the TorchScript-based exporter (``dynamo=False``): it maps torchvision's ``nms``
    to NonMaxSuppression; the antialiased resize gets the symbolic above.
    """
    import onnx

    if opset < MIN_OPSET:
        raise ValueError(f"opset must be >= {MIN_OPSET} (Resize with antialias), got {opset}")
    graph = build_graph(predictor, input_size, resize, precision)
    with torch.no_grad():
        num_outputs = len(graph(example_images(graph)))
    names = list(OUTPUT_NAMES[:num_outputs])
    sizes = {2: "height", 3: "width"} if resize else {}
    dynamic = {"images": {0: "batch", **sizes}, **{n: {0: "batch"} for n in names}}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.register_custom_op_symbolic("aten::_upsample_bilinear2d_aa", _resize_aa_symbolic,
                                           MIN_OPSET)
    with torch.no_grad():
        _trace_quietly(
            torch.onnx.export, graph, (example_images(graph),), str(out), dynamo=False,
            opset_version=opset, input_names=["images"], output_names=names,
            dynamic_axes=dynamic,
        )
    model = onnx.load(str(out))
    set_onnx_meta(model, graph_meta(predictor, graph))
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(out))
    return out


def set_onnx_meta(model, meta: ExportMeta) -> None:
    """Store ``meta`` as the ``retina`` entry of an ONNX model's ``metadata_props``."""
    kept = [p for p in model.metadata_props if p.key != "retina"]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    entry = model.metadata_props.add()
    entry.key, entry.value = "retina", meta.to_json()


def onnx_meta(model) -> str:
    """The ``retina`` metadata text of an ONNX model ("" when it has none)."""
    return next((p.value for p in model.metadata_props if p.key == "retina"), "")


@contextlib.contextmanager
def quiet_onnxruntime():
    """ONNX Runtime logs errors only inside (not its warnings about initializers it
    removes, which every exported graph has: constants the exporter left unused)."""
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    try:
        yield
    finally:
        ort.set_default_logger_severity(2)  # its default


def check_export(fmt: str, precision: str = "fp32", quantize: str | None = None,
                 calibration: Calibration | None = None) -> None:
    """One line naming the option for a combination no export writes."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if precision not in DTYPES:
        raise ValueError(f"precision={precision}: not one of {', '.join(DTYPES)}")
    if fmt not in PRECISION_FORMATS[precision]:
        raise ValueError(f"precision={precision}: format={fmt} cannot hold it; formats with "
                         f"{precision}: {', '.join(PRECISION_FORMATS[precision])}")
    needs = {"onnx": [("onnx", "export")] + [("onnxruntime", "export")] * bool(quantize),
             "openvino": [("onnx", "export"), ("openvino", "openvino")]
             + [("nncf", "openvino")] * bool(quantize)}.get(fmt, [])
    for package, extra in needs:
        if importlib.util.find_spec(package) is None:
            raise ValueError(f"format={fmt}{' quantize=' + quantize if quantize else ''} needs "
                             f"{package}: pip install 'retina-det[{extra}]'")
    if quantize is None:
        return
    if quantize != "int8":
        raise ValueError(f"quantize={quantize}: expected int8")
    if fmt not in QUANTIZE_FORMATS:
        raise ValueError(f"quantize=int8: format={fmt} cannot hold it; use format=onnx or "
                         "format=openvino")
    if precision != "fp32":
        raise ValueError(f"quantize=int8 quantizes the fp32 network: leave precision={precision}"
                         " out")
    if calibration is None:
        raise ValueError("quantize=int8 needs calib=DIR: training images to calibrate on")


def export(
    predictor: Exportable, fmt: str, out: str | Path, input_size: tuple[int, int] | None = None,
    opset: int = MIN_OPSET, resize: bool = True, precision: str = "fp32",
    quantize: str | None = None, calibration: Calibration | None = None,
) -> Path:
    """Write ``predictor`` in format ``fmt`` (one of :data:`FORMATS`) to ``out`` (its suffix
    added when it has none, see :func:`output_path`); returns the file written.

    Args:
        input_size: (h, w) of a graph's network input (default: the model's size).
        opset: of ONNX (and of the ONNX an OpenVINO export converts).
        resize: a graph resizes its images (False: it takes images of the input size).
        precision: ``fp32``, ``fp16`` or ``bf16``: the network's float type in a graph.
        quantize: ``"int8"``: static quantization of an ONNX or OpenVINO graph's network,
            calibrated on ``calibration`` (``retina.export.quantize``).
    """
    check_export(fmt, precision, quantize, calibration)
    out = output_path(fmt, out)
    if fmt == "safetensors":
        return export_safetensors(predictor, out)
    if fmt == "torchscript":
        return export_torchscript(predictor, out, input_size, precision)
    if fmt == "openvino":
        from retina.export.openvino import export_openvino

        return export_openvino(predictor, out, input_size, opset, resize, precision,
                               calibration if quantize else None)
    if quantize:
        from retina.export.quantize import export_onnx_int8

        return export_onnx_int8(predictor, out, calibration, input_size, opset, resize)
    return export_onnx(predictor, out, input_size, opset, resize, precision)
