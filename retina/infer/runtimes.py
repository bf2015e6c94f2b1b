"""Load any export (or a training checkpoint) as a callable with one contract.

``load(path)(images) -> detections``, whatever the format and runtime: see
:meth:`retina.infer.predictor.Predictor.__call__` for the contract.

Runtimes (``runtime=``): ``eager`` PyTorch, ``onnx`` (ONNX Runtime), ``openvino``, and
``auto``, the default: a graph file runs in its own runtime; a checkpoint or safetensors
export runs in ONNX Runtime when it is installed, through a graph exported once and cached
beside the model file (``retina.infer.graph_cache``), and eager PyTorch where no graph
can run it: on a GPU, without ONNX Runtime, or for a model whose input size varies per
image (``min_size`` / ``max_size``). One log line says which runtime runs, and why.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from retina.cli import suggest
from retina.export.formats import (
    META_FILE,
    OUTPUT_NAMES,
    quiet_onnxruntime,
    sha256,
    sidecar_path,
)
from retina.export.meta import ExportMeta
from retina.infer.predictor import (
    Detections,
    Images,
    Predictor,
    from_checkpoint,
    from_parts,
    image_list,
)
from retina.infer.sliced import SlicedPrediction
from retina.ops.levels import scale_to_original
from retina.options import RUNTIMES
from retina.schema import KIND_OF_SUFFIX

log = logging.getLogger(__name__)

RunGraph = Callable[[Tensor], dict[str, Tensor]]  # uint8 (B, 3, H, W) -> padded outputs
# what runs each kind of file (retina.export.formats.KIND_OF_SUFFIX)
RUNTIME_OF_KIND = {"torchscript": "torchscript", "onnx": "onnx", "openvino": "openvino"}
RUNTIME_NAMES = {"eager": "eager PyTorch", "torchscript": "TorchScript", "onnx": "ONNX Runtime",
                 "openvino": "OpenVINO"}
RUNTIME_PACKAGES = {"onnx": ("onnxruntime", "export"), "openvino": ("openvino", "openvino")}


class GraphPredictor(SlicedPrediction):
    """Runs a TorchScript or ONNX :class:`~retina.export.graph.DetectionGraph`.

    Images are resized to the graph's input size with torchvision's uint8 resize (the
    eval transform, so every runtime sees the same pixels) and the boxes mapped back.
    With ``graph_resize=True`` they go in as they are and the graph resizes them in
    float (at most one 8-bit level away from torchvision's AVX uint8 resize); a graph
    exported without its resize (fixed input size) refuses that.
    ``predict_large`` predicts a scene window by window (``retina.infer.sliced``).

    Args:
        run: the graph as a function returning outputs by name (see ``graph.py``).
        meta: metadata stored in the export.
        graph_resize: let the graph resize.
        runtime: what runs it (``torchscript``, ``onnx``, ``openvino``), for messages.
    """

    def __init__(self, run: RunGraph, meta: ExportMeta, graph_resize: bool = False,
                 runtime: str = "onnx") -> None:
        self.run = run
        self.meta = meta
        self.graph_resize = graph_resize
        self.runtime = runtime
        self.input_size = list(meta.graph_input_size)
        self.score_thresh: float | None = None  # stricter than the graph's: set_postprocess
        self.max_det: int | None = None

    def set_postprocess(self, **settings: float | None) -> GraphPredictor:
        """Keep only detections scoring at least ``score_thresh`` and the best ``max_det`` per
        image (None keeps the current value). The graph's own thresholds are fixed at export:
        a lower threshold, more detections or another ``nms_thresh`` / ``topk`` need a new
        export (``retina export conf= iou= max_det=``); the ValueError says so."""
        post = self.meta.model["postprocess"]
        for key, value in settings.items():
            if value is None:
                continue
            fixed = post.get(key)
            if key not in ("score_thresh", "nms_thresh", "topk", "max_det"):
                raise ValueError(f"not a postprocess setting: {key}")
            looser = {"score_thresh": value < fixed, "max_det": value > fixed}.get(
                key, value != fixed)
            if looser:
                option = {"score_thresh": "conf", "nms_thresh": "iou"}.get(key, key)
                raise ValueError(f"{option}={value}: this graph was exported with {option}="
                                 f"{fixed}, which it keeps; export again with {option}={value}")
            setattr(self, key, value)
        return self

    def _restricted(self, dets: Detections) -> Detections:
        """``dets`` with :meth:`set_postprocess`'s stricter score threshold and count."""
        if self.score_thresh is None and self.max_det is None:
            return dets
        out = []
        for det in dets:
            keep = det["scores"] > (self.score_thresh or -1.0)  # as the postprocess; a prefix
            n = min(int(keep.sum()), self.max_det or len(keep))
            out.append({k: v[:n] for k, v in det.items()})
        return out

    def _run_same_size(self, images: list[Tensor]) -> Detections:
        """Images of one size -> detections in their pixels."""
        out = self.run(torch.stack(images))  # (B, D, ...) padded
        fields = [n for n in ("boxes", "scores", "labels", "spread") if n in out]
        return [{n: out[n][i, : int(k)] for n in fields} for i, k in enumerate(out["num_dets"])]

    @torch.inference_mode()
    def __call__(self, images: Images) -> Detections:
        """Same contract as :meth:`Predictor.__call__`."""
        images = image_list(images)
        orig = torch.tensor([im.shape[-2:] for im in images])  # (B, 2)
        if not self.graph_resize:
            images = [TF.resize(im.cpu(), self.input_size, antialias=True) for im in images]
        dets: Detections = [{} for _ in images]
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, im in enumerate(images):
            by_size.setdefault(tuple(im.shape[-2:]), []).append(i)
        for idx in by_size.values():
            for i, det in zip(idx, self._run_same_size([images[i] for i in idx])):
                dets[i] = det
        if not self.graph_resize:
            sizes = torch.tensor([self.input_size] * len(images))  # (B, 2)
            dets = scale_to_original(dets, sizes, orig)
        return self._restricted(dets)


def read_meta(text: str, origin: str | Path) -> ExportMeta:
    meta = ExportMeta.from_json(text, origin)
    if meta.graph_input_size is None:
        raise ValueError(f"{origin}: retina metadata has no graph_input_size")
    return meta


def load_safetensors(path: str | Path, device: str | torch.device = "cpu") -> Predictor:
    """A Predictor from a safetensors export: ``path`` is the .safetensors or its .json."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    sidecar = path if path.suffix == ".json" else sidecar_path(path)
    if not sidecar.is_file():
        raise FileNotFoundError(f"{path}: no metadata sidecar {sidecar} (written by the export)")
    text = sidecar.read_text(errors="replace")
    meta = ExportMeta.from_json(text, sidecar)
    data = json.loads(text)
    weights = sidecar.parent / str(data.get("weights", sidecar.with_suffix(".safetensors").name))
    if not weights.is_file():
        raise FileNotFoundError(f"{sidecar} names weights {weights}, which do not exist")
    if data.get("weights_sha256") and sha256(weights) != data["weights_sha256"]:
        raise ValueError(f"{weights} is not the file {sidecar} was written with (sha256 differs)")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{weights} is not a valid safetensors file: {err}") from None
    return from_parts(meta, state, weights, device)


def load_torchscript(path: str | Path, graph_resize: bool = False) -> GraphPredictor:
    """A GraphPredictor over a TorchScript export (runs on the CPU it was traced for)."""
    import torchvision  # noqa: F401  registers torchvision::nms for the loaded graph

    extra = {META_FILE: ""}
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*torch.jit.load. is deprecated")
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except (RuntimeError, ValueError, OSError) as err:  # the archive reader's errors
        raise ValueError(f"{path} is not a loadable TorchScript file: {err}") from None
    if not extra[META_FILE]:
        raise ValueError(f"{path} is TorchScript but not a retina export (no {META_FILE})")
    meta = read_meta(extra[META_FILE], path)
    module.eval()

    def run(images: Tensor) -> dict[str, Tensor]:
        return dict(zip(OUTPUT_NAMES, module(images)))

    return fixed_size_checked(GraphPredictor(run, meta, graph_resize, "torchscript"), None,
                              path)


def fixed_size_checked(predictor: GraphPredictor, input_shape: list | None, path: str | Path
                       ) -> GraphPredictor:
    """``predictor``, refusing ``graph_resize`` for a graph whose input size is fixed
    (``input_shape`` (B, 3, H, W) with H and W numbers: exported without its resize)."""
    fixed = input_shape is not None and all(isinstance(d, int) for d in input_shape[2:])
    if fixed and predictor.graph_resize:
        raise ValueError(f"{path} takes images of {input_shape[2]} x {input_shape[3]} only (it "
                         "was exported without its resize): leave graph_resize out")
    return predictor


def cpu_threads(threads: int | None) -> int:
    """Threads of a runtime: ``threads``, else torch's CPU budget (``torch.get_num_threads``,
    which ``retina.training.cpu_budget`` and Lightning's launcher set)."""
    return threads or torch.get_num_threads()


def load_onnx(
    path: str | Path, graph_resize: bool = False, providers: list[str] | None = None,
    threads: int | None = None,
) -> GraphPredictor:
    """A GraphPredictor over an ONNX export, run by ONNX Runtime.

    The session: every graph optimisation (``ORT_ENABLE_ALL``: constant folding, fusions,
    the NCHWc convolution layout), sequential execution, ``threads`` intra-op threads (one
    operator at a time across the cores: a detector is a chain of convolutions), one
    inter-op thread.

    Args:
        providers: ONNX Runtime execution providers (default CPU).
        threads: intra-op threads (default: torch's thread count, the process's CPU budget).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = cpu_threads(threads)
    options.inter_op_num_threads = 1
    # no memory arena: it keeps the largest batch's blocks (retina serve grew 186 MB over 500
    # requests of batches of 1-8 with it, 10 MB without, at the same speed; 2026-12-07)
    options.enable_cpu_mem_arena = False
    options.log_severity_level = 3  # not its notes on initializers the exporter left unused
    try:
        with quiet_onnxruntime():
            session = ort.InferenceSession(str(path), options,
                                           providers=providers or ["CPUExecutionProvider"])
    # ONNX Runtime's errors (InvalidProtobuf, Fail, ...) derive from Exception only
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"{path} is not a loadable ONNX model: {err}") from None
    text = session.get_modelmeta().custom_metadata_map.get("retina")
    if not text:
        raise ValueError(f"{path} is ONNX but not a retina export (no 'retina' metadata)")
    meta = read_meta(text, path)
    names = [o.name for o in session.get_outputs()]

    def run(images: Tensor) -> dict[str, Tensor]:
        outs = session.run(names, {"images": images.numpy()})
        return {n: torch.from_numpy(v) for n, v in zip(names, outs)}

    predictor = GraphPredictor(run, meta, graph_resize, "onnx")
    return fixed_size_checked(predictor, session.get_inputs()[0].shape, path)


def load_openvino(path: str | Path, graph_resize: bool = False, threads: int | None = None
                  ) -> GraphPredictor:
    """A GraphPredictor over an OpenVINO IR export (``.xml`` + ``.bin``), compiled for the
    CPU: latency hint (one stream), ``threads`` threads (default: torch's), float32
    inference (OpenVINO would run bf16 on CPUs with AMX / AVX512-BF16; an INT8 model keeps
    its integer kernels)."""
    import openvino as ov

    core = ov.Core()
    try:
        model = core.read_model(str(path))
    except RuntimeError as err:
        raise ValueError(f"{path} is not a loadable OpenVINO model: "
                         f"{str(err).splitlines()[0]}") from None
    if not model.has_rt_info(["retina"]):
        raise ValueError(f"{path} is OpenVINO IR but not a retina export (no 'retina' rt_info)")
    meta = read_meta(model.get_rt_info(["retina"]).astype(str), path)
    compiled = core.compile_model(model, "CPU", {
        "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": cpu_threads(threads),
        "INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    names = [o.get_any_name() for o in compiled.outputs]

    def run(images: Tensor) -> dict[str, Tensor]:
        outs = request.infer({"images": images.numpy()})
        return {n: torch.from_numpy(outs[compiled.output(n)].copy()) for n in names}

    shape = model.inputs[0].get_partial_shape()
    dims = [d.get_length() if d.is_static else None for d in shape]
    return fixed_size_checked(GraphPredictor(run, meta, graph_resize, "openvino"), dims, path)


def installed(runtime: str) -> bool:
    """Whether the package ``runtime`` (``onnx``, ``openvino``) needs is installed."""
    return importlib.util.find_spec(RUNTIME_PACKAGES[runtime][0]) is not None


def not_installed(runtime: str) -> str:
    package, extra = RUNTIME_PACKAGES[runtime]
    return f"{package} is not installed (pip install 'retina-det[{extra}]')"


def choose_runtime(runtime: str, meta: ExportMeta, device: str | torch.device) -> tuple[str, str]:
    """The runtime of a checkpoint or safetensors model, and why (see the module docstring).

    Raises:
        ValueError: ``runtime`` names one that cannot run this model here (one line naming
            the option and what would).
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime={runtime}: not one of {', '.join(RUNTIMES)}"
                         f"{suggest(runtime, RUNTIMES)}")
    if runtime == "eager":
        return "eager", "runtime=eager"
    on_cpu = torch.device(device).type == "cpu"
    variable = meta.size is None
    why_not = (f"the model runs on {device} (ONNX Runtime and OpenVINO run here on the CPU)"
               if not on_cpu else
               f"the model resizes each image by min_size={meta.min_size} / max_size="
               f"{meta.max_size}, so its input size varies per image and a graph's is fixed"
               if variable else None)
    if runtime == "auto":
        if why_not:
            return "eager", why_not
        if not installed("onnx"):
            return "eager", not_installed("onnx")
        return "onnx", "runtime=auto: the fastest installed"
    if why_not:
        raise ValueError(f"runtime={runtime}: {why_not}; use runtime=eager"
                         + (" (or export with input_size=[H,W] and load that)" if variable
                            else ""))
    if not installed(runtime):
        raise ValueError(f"runtime={runtime}: {not_installed(runtime)}")
    return runtime, f"runtime={runtime}"


def load(
    path: str | Path, device: str | torch.device = "cpu", runtime: str = "auto", **options
) -> Predictor | GraphPredictor:
    """A ready predictor from any export or a training checkpoint, chosen by suffix.

    ``.ckpt``: a ``retina.train`` checkpoint (read with ``weights_only=True``);
    ``.safetensors`` / ``.json``: weights + sidecar; either runs in ``runtime`` (module
    docstring: by default ONNX Runtime through a cached graph, else eager PyTorch).
    ``.pt`` / ``.ts``: TorchScript; ``.onnx``: ONNX Runtime; ``.xml``: OpenVINO. All return
    detections in the pixels of the given images (see :meth:`Predictor.__call__`).

    Args:
        path: the file.
        device: where an eager model runs.
        runtime: ``auto``, ``eager``, ``onnx`` or ``openvino`` (a graph file: ``auto`` or
            its own).
        options: ``graph_resize`` for graph files; ``threads`` for the runtimes (default:
            torch's thread count); ``providers`` for ONNX Runtime.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not what its suffix says, or ``runtime`` cannot run it
            (the message names it).
    """
    path = Path(path)
    kind = KIND_OF_SUFFIX.get(path.suffix.lower())
    if kind is None:
        raise ValueError(
            f"{path}: unknown model file type; expected one of {', '.join(KIND_OF_SUFFIX)}")
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    if kind in ("safetensors", "checkpoint"):
        eager = load_safetensors(path, device) if kind == "safetensors" else from_checkpoint(
            path, device)
        chosen, why = choose_runtime(runtime, eager.meta, device)
        log.info("runtime: %s (%s)", RUNTIME_NAMES[chosen], why)
        if chosen == "eager":
            return eager
        from retina.infer.graph_cache import CachedGraphPredictor

        return CachedGraphPredictor(eager, chosen, path, options.get("threads"))
    own = RUNTIME_OF_KIND[kind]
    if runtime not in ("auto", own):
        raise ValueError(f"runtime={runtime}: {path.name} runs in {RUNTIME_NAMES[own]}; use "
                         f"runtime=auto (or give a checkpoint to run in {runtime})")
    if own in RUNTIME_PACKAGES and not installed(own):
        raise ValueError(f"{path}: {not_installed(own)}")
    loader = {"torchscript": load_torchscript, "onnx": load_onnx, "openvino": load_openvino}
    if own == "torchscript":  # runs on torch's threads
        options.pop("threads", None)
    predictor = loader[own](path, **options)
    log.info("runtime: %s (%s)", RUNTIME_NAMES[own], path.name)
    return predictor
