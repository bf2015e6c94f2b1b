"""Load any export (or a training checkpoint) as a callable with one contract.

``load(path)(images) -> detections``, whatever the format: see
:meth:`retina.infer.predictor.Predictor.__call__` for the contract.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from retina.export.formats import META_FILE, OUTPUT_NAMES, sha256, sidecar_path
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
from retina.schema import KIND_OF_SUFFIX

RunGraph = Callable[[Tensor], dict[str, Tensor]]  # uint8 (B, 3, H, W) -> padded outputs


class GraphPredictor(SlicedPrediction):
    """Runs a TorchScript or ONNX :class:`~retina.export.graph.DetectionGraph`.

    Images are resized to the graph's input size with torchvision's uint8 resize (the
    eval transform, so every runtime sees the same pixels) and the boxes mapped back.
    With ``graph_resize=True`` they go in as they are and the graph resizes them in
    float (at most one 8-bit level away from torchvision's AVX uint8 resize).
    ``predict_large`` predicts a scene window by window (``retina.infer.sliced``).

    Args:
        run: the graph as a function returning outputs by name (see ``graph.py``).
        meta: metadata stored in the export.
        graph_resize: let the graph resize.
    """

    def __init__(self, run: RunGraph, meta: ExportMeta, graph_resize: bool = False) -> None:
        self.run = run
        self.meta = meta
        self.graph_resize = graph_resize
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

    return GraphPredictor(run, meta, graph_resize)


def load_onnx(
    path: str | Path, graph_resize: bool = False, providers: list[str] | None = None,
    threads: int | None = None,
) -> GraphPredictor:
    """A GraphPredictor over an ONNX export, run by ONNX Runtime.

    Args:
        providers: ONNX Runtime execution providers (default CPU).
        threads: intra-op threads (default: ONNX Runtime's choice).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    try:
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

    return GraphPredictor(run, meta, graph_resize)


def load(
    path: str | Path, device: str | torch.device = "cpu", **options
) -> Predictor | GraphPredictor:
    """A ready predictor from any export or a training checkpoint, chosen by suffix.

    ``.safetensors`` / ``.json``: eager :class:`Predictor` from weights + sidecar;
    ``.pt`` / ``.ts``: TorchScript; ``.onnx``: ONNX Runtime; ``.ckpt``: a ``retina.train``
    checkpoint (read with ``weights_only=True``). All return detections in the pixels of
    the given images (see :meth:`Predictor.__call__`).

    Args:
        path: the file.
        device: for the eager formats.
        options: ``graph_resize`` for TorchScript / ONNX; ``providers``, ``threads`` for ONNX.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not what its suffix says (the message names it).
    """
    path = Path(path)
    kind = KIND_OF_SUFFIX.get(path.suffix.lower())
    if kind is None:
        raise ValueError(
            f"{path}: unknown model file type; expected one of {', '.join(KIND_OF_SUFFIX)}")
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    if kind == "safetensors":
        return load_safetensors(path, device)
    if kind == "checkpoint":
        return from_checkpoint(path, device)
    if kind == "torchscript":
        return load_torchscript(path, **options)
    return load_onnx(path, **options)
