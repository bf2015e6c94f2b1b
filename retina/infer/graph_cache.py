"""A checkpoint (or safetensors export) run by ONNX Runtime or OpenVINO through a graph that
is exported once and cached beside the model file.

Where: ``.<model file name>.graphs/`` in the model's folder (``best.ckpt`` ->
``.best.ckpt.graphs/``), or ``$XDG_CACHE_HOME/retina/graphs/`` (``~/.cache/...``) when that
folder is not writable. One entry per model content and graph settings:
``<content>-<settings>/model.onnx`` (or ``model.xml`` + ``.bin``), where

- ``content`` is the sha256 of the model file (a retrained ``best.ckpt`` is another model,
  a copied or touched one the same), and
- ``settings`` hashes what the graph is built from besides the weights: the runtime, the
  input size, the postprocess the graph holds, the package, torch and opset versions.

A new entry is written into a temporary folder and renamed into place (atomic: two
processes building the same graph at once both end with a whole one), and entries of
other contents of the same model file are removed then (stale). Nothing else is ever
deleted; removing the folder is always safe.

The graph's postprocess is the model's own, loosened only where asked
(:meth:`CachedGraphPredictor.set_postprocess`: a lower ``score_thresh``, a higher
``max_det``, another ``nms_thresh`` or ``topk``); a stricter score threshold or count is
applied to the graph's sorted output, which gives the same detections (a box below the
threshold never suppresses one above it), so ``retina predict conf=0.3`` and ``conf=0.5``
share one graph.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

from retina.export.formats import MIN_OPSET, export, sha256
from retina.infer.predictor import Predictor
from retina.infer.runtimes import RUNTIME_NAMES, GraphPredictor, load_onnx, load_openvino
from retina.schema import package_version

log = logging.getLogger(__name__)

CACHE_VERSION = 1  # bump when what a cached graph holds changes without a version change
FILES = {"onnx": ("onnx", "model.onnx"), "openvino": ("openvino", "model.xml")}
POSTPROCESS_KEYS = ("score_thresh", "nms_thresh", "topk", "max_det")


def cache_root(model_file: Path) -> Path:
    """The cache folder of ``model_file``: beside it, or the user's cache when its folder is
    not writable."""
    model_file = Path(model_file).resolve()
    beside = model_file.parent / f".{model_file.name}.graphs"
    if os.access(model_file.parent, os.W_OK) or os.access(beside, os.W_OK):
        return beside
    home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    where = hashlib.sha256(str(model_file).encode()).hexdigest()[:16]
    return home / "retina" / "graphs" / f"{model_file.name}-{where}"


def settings_key(runtime: str, input_size: list[int], postprocess: dict) -> str:
    """The hash of what a graph is built from besides the weights (module docstring)."""
    settings = {"runtime": runtime, "input_size": list(input_size),
                "postprocess": {k: postprocess[k] for k in POSTPROCESS_KEYS},
                "retina": package_version(), "torch": torch.__version__, "opset": MIN_OPSET,
                "cache": CACHE_VERSION}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def graph_file(source: Predictor, runtime: str, model_file: Path) -> Path:
    """Where the graph of ``source`` for ``runtime`` is (or will be) cached."""
    size = [source.meta.size] * 2
    settings = settings_key(runtime, size, source.meta.model["postprocess"])
    entry = f"{sha256(Path(model_file))[:16]}-{settings}"
    return cache_root(model_file) / entry / FILES[runtime][1]


def cached_graph(source: Predictor, runtime: str, model_file: Path) -> Path:
    """The graph file of ``source`` for ``runtime``, exported into the cache unless there.

    The graph takes images of the input size (no resize inside: ``GraphPredictor``
    resizes with torchvision first) in any batch size.
    """
    entry = graph_file(source, runtime, model_file).parent
    root, content = entry.parent, entry.name.split("-")[0]
    fmt, name = FILES[runtime]
    if (entry / name).is_file():
        log.info("graph for %s: %s (cached)", RUNTIME_NAMES[runtime], entry / name)
        return entry / name
    root.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=root))
    try:
        export(source, fmt, tmp / name, resize=False)
        try:
            os.rename(tmp, entry)  # atomic; fails if another process put it there first
        except OSError:
            if not (entry / name).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for stale in root.iterdir():  # other contents of this model file
        if stale.is_dir() and not stale.name.startswith((content, ".building-")):
            shutil.rmtree(stale, ignore_errors=True)
    log.info("graph for %s: exported in %.1f s to %s", RUNTIME_NAMES[runtime],
             time.perf_counter() - start, entry / name)
    return entry / name


class CachedGraphPredictor(GraphPredictor):
    """An eager :class:`Predictor` run through a cached graph (module docstring): the same
    contract, detections and metadata, another runtime.

    The graph is exported (or found in the cache) and loaded on the first call, after any
    :meth:`set_postprocess`.

    Args:
        source: the eager predictor (its weights, metadata and postprocess).
        runtime: ``onnx`` or ``openvino``.
        model_file: the checkpoint or safetensors file ``source`` was read from.
        threads: of the runtime (default: torch's thread count).
    """

    def __init__(self, source: Predictor, runtime: str, model_file: str | Path,
                 threads: int | None = None) -> None:
        self.source = source
        self.runtime = runtime
        self.model_file = Path(model_file)
        self.threads = threads
        self.graph_resize = False
        self.input_size = [source.meta.size] * 2
        self.own = {k: source.meta.model["postprocess"][k] for k in POSTPROCESS_KEYS}
        self.wanted = dict(self.own)  # as set_postprocess asked
        self.built = dict(self.own)  # what the graph holds
        self.score_thresh: float | None = None  # stricter than the graph's (GraphPredictor)
        self.max_det: int | None = None
        self._graph: GraphPredictor | None = None

    @property
    def meta(self):
        """The model's metadata, its postprocess as set (``source.meta``)."""
        return self.source.meta

    def set_postprocess(self, **settings: float | None) -> CachedGraphPredictor:
        """Like :meth:`Predictor.set_postprocess`: any value; a looser one than the cached
        graph holds exports another graph (module docstring)."""
        for key, value in settings.items():
            if key not in POSTPROCESS_KEYS:
                raise ValueError(f"not a postprocess setting: {key}")
            if value is not None:
                self.wanted[key] = value
        built = {"score_thresh": min(self.own["score_thresh"], self.wanted["score_thresh"]),
                 "max_det": max(self.own["max_det"], self.wanted["max_det"]),
                 "nms_thresh": self.wanted["nms_thresh"], "topk": self.wanted["topk"]}
        if built != self.built:
            self.built, self._graph = built, None
        self.source.set_postprocess(**self.wanted)  # its metadata: what this predictor does
        self.score_thresh = self.wanted["score_thresh"]  # applied to the graph's output
        self.max_det = self.wanted["max_det"]
        return self

    def graph_source(self) -> Predictor:
        """The eager predictor with the postprocess the graph holds."""
        source = copy.copy(self.source)
        source.meta = copy.deepcopy(self.source.meta)
        source.postprocess = copy.copy(self.source.postprocess)
        return source.set_postprocess(**self.built)

    def in_cache(self) -> bool:
        """Whether the graph is already in the cache (the first call only loads it)."""
        return graph_file(self.graph_source(), self.runtime, self.model_file).is_file()

    def graph(self) -> GraphPredictor:
        """The loaded graph (exported into the cache first if it is not there)."""
        if self._graph is None:
            path = cached_graph(self.graph_source(), self.runtime, self.model_file)
            load = load_onnx if self.runtime == "onnx" else load_openvino
            self._graph = load(path, threads=self.threads)
        return self._graph

    def run(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.graph().run(images)
