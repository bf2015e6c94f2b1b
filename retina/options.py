"""Every ``key=value`` command's options, defined once: the parser, ``--help``, the checks and
docs/commands.md are all made from these dataclasses.

An option is a dataclass field made by :func:`opt`: its default, one line of help, and the
rules a value must keep (choices, a range, a file that must exist, old names still
accepted). Options that mean the same thing in several commands are one definition each
(:func:`model`, :func:`out`, :func:`device`, :func:`conf`, :func:`iou`, :func:`max_det`,
:func:`classes`), so the same name means the same thing everywhere.

Below every layer (any module may import it): the standard library and omegaconf only, so
``--help`` and a bad option are answered before torch is imported.
"""

from __future__ import annotations

from dataclasses import MISSING as NO_DEFAULT
from dataclasses import dataclass, field, fields
from typing import Any

from omegaconf import MISSING

RULES = "retina"  # the field metadata key of an option's Rules


@dataclass(frozen=True)
class Rules:
    """What :func:`retina.cli.parse_options` checks of a value besides its type.

    Attributes:
        help: one line for ``--help`` and docs/commands.md.
        choices: the values allowed.
        low: the smallest value allowed (inclusive).
        high: the largest value allowed (inclusive).
        above: values must be greater than this.
        exists: ``file``, ``dir`` or ``path`` (either): the value names something that exists;
            ``json``: a file that starts like JSON; ``glob``: a file, a folder or a pattern that
            matches files; ``model``: a model file that looks like one (``model_kinds`` of
            ``retina.schema.KIND_OF_SUFFIX``; checked without loading it).
        pattern: a regular expression the whole value matches (``choices`` written as one).
        aliases: old names of the option, still accepted with a one-line note.
        metavar: how ``--help`` shows a required value (``FILE``, ``DIR``).
    """

    help: str
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    above: float | None = None
    exists: str | None = None
    model_kinds: tuple[str, ...] | None = None
    pattern: str | None = None
    aliases: tuple[str, ...] = ()
    metavar: str | None = None


def opt(default: Any, help: str, **rules: Any) -> Any:
    """A dataclass field with its :class:`Rules` (``default=MISSING``: required; a list
    default is copied per instance)."""
    meta = {RULES: Rules(help, **rules)}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def rules_of(schema: type) -> dict[str, Rules]:
    """``{option: Rules}`` of a dataclass of options (fields without rules: help only)."""
    return {f.name: f.metadata.get(RULES, Rules("")) for f in fields(schema)}


def default_of(schema: type, name: str) -> Any:
    f = next(f for f in fields(schema) if f.name == name)
    if f.default_factory is not NO_DEFAULT:
        return f.default_factory()
    return f.default


# ---------------------------------------------------------------- one definition per meaning

MODEL_HELP = "the model file: a checkpoint (.ckpt) or an export (.safetensors/.json, .pt, .onnx)"


def model(help: str = MODEL_HELP, kinds: tuple[str, ...] | None = None) -> Any:
    return opt(MISSING, help, exists="model", model_kinds=kinds, aliases=("ckpt_path",),
               metavar="FILE")


def out(default: Any, help: str) -> Any:
    return opt(default, help, aliases=("out_dir",), metavar="PATH" if default is MISSING else None)


def device() -> Any:
    return opt("auto", "where the network runs: auto (a GPU when there is one), cpu, cuda, cuda:N",
               pattern=r"auto|cpu|cuda(:\d+)?|gpu|mps", metavar="auto, cpu, cuda or cuda:N",
               aliases=("accelerator",))


def conf(default: float | None) -> Any:
    return opt(default, "score threshold of the results: detections scoring above it are kept"
               + (" (null: the model's own)" if default is None else ""),
               low=0.0, high=1.0, aliases=("score_thresh",))


def iou() -> Any:
    return opt(None, "IoU above which class-wise NMS drops the lower-scoring box (null: the "
               "model's own)", low=0.0, high=1.0, aliases=("nms_thresh",))


def max_det(help: str = "detections per image at most (null: the model's own)") -> Any:
    return opt(None, help, low=1)


def classes() -> Any:
    return opt(None, "keep only these classes: names or dataset category ids, e.g. [Tree] "
               "(null: all)")


RUNTIMES = ("auto", "eager", "onnx", "openvino")  # retina.infer.runtimes.load's runtime=


def runtime() -> Any:
    return opt("auto", "what runs a checkpoint or safetensors model: auto (ONNX Runtime when "
               "installed, through a graph cached beside the model; eager PyTorch on a GPU or "
               "for a min_size/max_size model), eager, onnx, openvino; a graph file runs in "
               "its own", choices=RUNTIMES)


def calib() -> Any:
    return opt(None, "quantize=int8: a folder of training images to calibrate the 8-bit "
               "ranges on", exists="dir")


def calib_images() -> Any:
    return opt(32, "quantize=int8: calibrate on this many images of calib (evenly spaced)",
               low=1)


# ---------------------------------------------------------------- the commands

@dataclass
class PredictOptions:
    """``retina predict``: a model over image files."""

    model: str = model()
    images: str = opt(MISSING, "a folder (every file in it), a glob pattern ('photos/*.jpg') or "
                      "one file", exists="glob", metavar="PATH")
    out: str = out(MISSING, "output folder: results.json, images.json, drawn/, geojson/")
    conf: float = conf(0.25)
    iou: float | None = iou()
    max_det: int | None = max_det()
    classes: list[str] | None = classes()
    device: str = device()
    draw: bool = opt(False, "also write the images with their boxes drawn (out/drawn/)")
    draw_conf: float | None = opt(None, "draw the boxes scoring at least this (null: conf)",
                                  low=0.0, high=1.0, aliases=("draw_thresh",))
    batch_size: int = opt(4, "images per network call (sliced: windows)", low=1)
    ann: str | None = opt(None, "take the image ids from this COCO file (by file name)",
                          exists="json")
    tile: int | None = opt(None, "large images: N-px windows at native scale, merged across "
                           "seams (null: each image resized to the model input)", low=16)
    overlap: float = opt(0.25, "sliced: fraction of a window shared with each neighbour",
                         low=0.0, high=0.9)
    merge: str = opt("nms", "sliced: how duplicates across windows merge",
                     choices=("nms", "fusion"))
    runtime: str = runtime()
    tta: str | None = opt(None, "test-time augmentation: flip (each image and its horizontal "
                          "flip, boxes merged by merge=; twice the network time)",
                          choices=("flip",))
    full_pass: bool = opt(False, "sliced: also predict the whole image resized to the model "
                          "input and merge its boxes with the windows' (finds objects larger "
                          "than a window)")
    devices: int = opt(1, "processes that share the files (Lightning's predict loop, one per "
                       "device: CPU processes with device=cpu, else GPUs)", low=1)
    num_nodes: int = opt(1, "machines that share the files (run the command on each, e.g. "
                         "under srun or torchrun)", low=1)
    progress: bool = opt(True, "show a progress bar")


@dataclass
class EvalOptions:
    """``retina eval``: validate a checkpoint and write the evaluation report."""

    model: str = model("the checkpoint (.ckpt) of retina train", ("checkpoint",))
    data: str | None = opt(None, "the data to evaluate on: a data config (coco, voc, yolo, "
                           "neon_trees) with its data.KEY=VALUE keys; null: the checkpoint's "
                           "own data (data.KEY=VALUE alone changes it, e.g. data.root=DIR)")
    out: str | None = out(None, "the report folder (null: outputs/eval/<date>)")
    device: str = device()
    max_det: int | None = max_det("detections per image kept and scored; COCO's numbers count "
                                  "the best 100, more adds mAP_N, mAP_50_N and AR_N (whole "
                                  "scenes; null: the model's own)")


@dataclass
class ExportOptions:
    """``retina export``: a checkpoint as safetensors, TorchScript, ONNX or OpenVINO."""

    model: str = model("the checkpoint (.ckpt) of retina train", ("checkpoint",))
    format: str = opt("onnx", "safetensors (weights + JSON, eager PyTorch), torchscript, onnx "
                      "or openvino (one graph: uint8 images in, padded detections out)",
                      choices=("safetensors", "torchscript", "onnx", "openvino"))
    out: str | None = out(None, "the file to write (null: next to the checkpoint, with the "
                          "format's suffix)")
    input_size: list[int] | None = opt(None, "[H,W] the graph's network input (null: the "
                                       "model's data.size)")
    opset: int = opt(18, "ONNX opset (>= 18: Resize with antialias)", low=18)
    conf: float | None = conf(None)
    iou: float | None = iou()
    max_det: int | None = max_det()
    quantize: str | None = opt(None, "int8: static INT8 quantization of the network (onnx: "
                               "ONNX Runtime, QDQ; openvino: NNCF), calibrated on calib",
                               choices=("int8",))
    calib: str | None = calib()
    calib_images: int = calib_images()
    precision: str = opt("fp32", "the network's float type in the graph: fp32, fp16 (GPUs: "
                         "torchscript, onnx, openvino) or bf16 (torchscript)",
                         choices=("fp32", "fp16", "bf16"))


@dataclass
class ParityOptions:
    """``retina parity``: eager PyTorch against its exports on the same images."""

    model: str = model("the checkpoint (.ckpt) of retina train", ("checkpoint",))
    ann: str = opt("data/neon_trees/annotations/val.json", "COCO annotations of the images to "
                   "compare on", exists="json")
    images: str = opt("data/neon_trees/val", "their image folder", exists="dir")
    out: str | None = out(None, "keep the exports in this folder (null: a temporary one)")
    max_images: int | None = opt(None, "only the first N images of ann (null: all)", low=1)
    num_random: int = opt(2, "random images compared too (not in mAP)", low=0)
    batch_size: int = opt(4, "images per call", low=1)
    conf: float | None = conf(None)
    calib: str | None = opt("data/neon_trees/train", "the INT8 rows: calibrate on these "
                            "training images (null: no INT8 rows)", exists="dir")
    calib_images: int = calib_images()


@dataclass
class ExportSpeedOptions:
    """``retina export-speed``: milliseconds per tile of each runtime."""

    model: str = model("the checkpoint (.ckpt) of retina train", ("checkpoint",))
    tile: int = opt(400, "tile side in pixels (batch 1)", low=16)
    image: str | None = opt("data/neon_trees/val/OSBS_029_x0000_y0000.png", "crop the tile from "
                            "this image (null: smooth random pixels)", exists="file")
    repeats: int = opt(20, "timed calls per runtime, interleaved", low=1)
    warmup: int = opt(3, "untimed calls per runtime first", low=0)
    threads: int | None = opt(None, "CPU threads of every runtime (null: torch's default)",
                              low=1)
    out: str | None = out(None, "keep the exports in this folder (null: a temporary one)")
    calib: str | None = opt("data/neon_trees/train", "the INT8 rows: calibrate on these "
                            "training images (null: no INT8 rows)", exists="dir")
    calib_images: int = calib_images()
    batch: int = opt(1, "tiles per call (the same tile repeated): batch 1 is one tile's "
                     "latency, more shows what batching windows gains", low=1)


@dataclass
class ReportOptions:
    """``retina report``: the evaluation report of a COCO results file, no model."""

    ann: str = opt(MISSING, "COCO annotation file, the ground truth", exists="json",
                   metavar="FILE")
    results: str = opt(MISSING, "COCO results: [{image_id, category_id, bbox: [x, y, w, h], "
                       "score}] (retina predict writes one)", exists="json", metavar="FILE")
    out: str = out(MISSING, "the report folder")
    images: str | None = opt(None, "folder of the annotation file's file_names: draws the worst "
                             "images", exists="dir")


@dataclass
class TileOptions:
    """``retina tile``: cut large annotated images into training tiles."""

    format: str = opt(MISSING, "the source annotations", choices=("coco", "voc", "yolo"),
                      metavar="coco|voc|yolo")
    out: str = out(MISSING, "output folder: images/ and annotations.json")
    root: str | None = opt(None, "voc / yolo: the dataset root", exists="dir")
    split: str | None = opt(None, "voc: ImageSets/Main/<split>.txt (null: every XML); yolo: "
                            "required")
    ann: str | None = opt(None, "coco: the annotation file", exists="json")
    images: str | None = opt(None, "coco: the image folder (file_name is relative to it)",
                             exists="dir")
    tile: int = opt(400, "window side in pixels", low=16)
    overlap: float = opt(0.25, "fraction of a window shared with each neighbour", low=0.0,
                         high=0.9)
    min_visible: float = opt(0.5, "a box goes to a tile holding at least this fraction of it",
                             above=0.0, high=1.0)
    keep_empty: bool = opt(False, "also write tiles without boxes")
    edge: str = opt("shift", "the last row and column: shift (inside the image) or cut "
                    "(narrower tiles)", choices=("shift", "cut"))
    skip_bad: bool = opt(False, "voc / yolo: skip and count bad files instead of stopping")


@dataclass
class ServeOptions:
    """``retina serve``: a model over HTTP, requests batched across clients."""

    model: str = model()
    host: str = opt("127.0.0.1", "the address to listen on (another than loopback needs an "
                    "API key)")
    port: int = opt(8000, "the port (0: any free port, printed)", low=0, high=65535)
    runtime: str = runtime()
    max_batch: int = opt(8, "images per network call, across clients", low=1)
    batch_timeout: float = opt(0.01, "seconds the first image of a batch waits for others",
                               low=0.0)
    workers: int = opt(1, "inference threads sharing the model", low=1)
    max_bytes: int = opt(50_000_000, "upload limit in bytes (413 over it)", low=1)
    max_pixels: int = opt(50_000_000, "decoded image limit, width x height (413 over it)",
                          low=1)
    api_key: str | None = opt(None, "/predict and /info need the header X-API-Key (null: "
                              "$RETINA_API_KEY, or none)")
    device: str = device()
    grace: float = opt(30.0, "seconds SIGTERM waits for the requests in flight", low=0.0)


@dataclass
class SweepReportOptions:
    """``retina sweep-report DIR``: the summary of a multirun directory."""

    metric: str | None = opt(None, "rank and plot by this (null: the jobs' optimized_metric)")
    minimize: bool = opt(False, "lower is better (default: the sweeper's direction)")


# ---------------------------------------------------------------- retina train (Hydra)

# What `retina train`'s check (retina.cli.check_train_args) holds a key given on the command
# line to, beyond its type (the type of the composed default): fnmatch patterns of dotted keys.
TRAIN_RULES: dict[str, Rules] = {
    "trainer.max_epochs": Rules("", low=-1),
    "trainer.max_steps": Rules("", low=-1),
    "trainer.min_epochs": Rules("", low=0),
    "trainer.check_val_every_n_epoch": Rules("", low=1),
    "trainer.log_every_n_steps": Rules("", low=1),
    "trainer.accumulate_grad_batches": Rules("", low=1),
    "data.batch_size": Rules("", low=1),
    "data.val_batch_size": Rules("", low=1),
    "data.num_workers": Rules("", low=0),
    "data.size": Rules("", low=32),
    "data.min_size": Rules("", low=32),
    "data.max_size": Rules("", low=32),
    "data.size_divisible": Rules("", low=1),
    "data.[hv]flip": Rules("", low=0.0, high=1.0),
    "data.rot90": Rules("", low=0.0, high=1.0),
    "data.resize": Rules("", choices=("antialias", "rcnn")),
    "data.root": Rules("", exists="dir"),
    "data.train_ann": Rules("", exists="file"),
    "data.val_ann": Rules("", exists="file"),
    "data.train_images": Rules("", exists="dir"),
    "data.val_images": Rules("", exists="dir"),
    "optim.lr": Rules("", low=0.0),  # 0: frozen weights (validation checks)
    "optim.weight_decay": Rules("", low=0.0),
    "optim.momentum": Rules("", low=0.0, high=1.0),
    "loss.gamma": Rules("", low=0.0),
    "loss.alpha": Rules("", high=1.0),  # negative: no alpha weighting (torchvision: -1)
    "loss.*_weight": Rules("", low=0.0),
    "loss.box_loss": Rules("", choices=("smooth_l1", "l1", "giou")),
    "loss.class_weights": Rules("", choices=("inverse", "log")),
    "loss.assigner.fg_iou": Rules("", low=0.0, high=1.0),
    "loss.assigner.bg_iou": Rules("", low=0.0, high=1.0),
    "loss.assigner.topk": Rules("", low=1),
    "model.postprocess.score_thresh": Rules("", low=0.0, high=1.0),
    "model.postprocess.nms_thresh": Rules("", low=0.0, high=1.0),
    "model.postprocess.max_det": Rules("", low=1),
    "model.postprocess.topk": Rules("", low=1),
    "model.detector.head.num_convs": Rules("", low=0),
    "model.detector.head.channels": Rules("", low=1),
    "model.detector.head.prior_prob": Rules("", above=0.0, high=1.0),
    "model.detector.backbone.freeze_stages": Rules("", low=0, high=5),
    "model.init_from": Rules("", exists="file"),
    "ckpt_path": Rules("", exists="file"),  # or `last`
    "seed": Rules("", low=0),
    "threads": Rules("", low=1),
    "early_stop.patience": Rules("", low=1),
}
# keys whose values Lightning takes in several types (devices=2 or auto, precision=16 or
# bf16-mixed): not held to their default's type
TRAIN_ANY_TYPE = ("trainer.devices", "trainer.precision", "trainer.max_time", "trainer.strategy",
                  "trainer.val_check_interval", "trainer.limit_*", "trainer.plugins")
# COCO data is found by data.root (the COCO 2017 layout) or by these four
COCO_PATHS = ("train_ann", "train_images", "val_ann", "val_images")
