"""The command line's one grammar: ``retina COMMAND [WHAT] [PATH] key=value ...``.

Every command takes ``key=value`` options (Hydra overrides for the Hydra commands, the same
spelling parsed by OmegaConf for the others), prints a short usage with an example for
``--help`` (exit 0), and reports a missing, unknown or ill-typed option as one line naming it,
with an example (exit 2). :data:`COMMANDS` lists them all: ``retina NAME ...`` (the console
script, :mod:`retina.__main__`) runs the same ``main(argv)`` as ``python -m MODULE ...``.

Below every layer (any module may import it): hydra and omegaconf only.
"""

from __future__ import annotations

import difflib
import functools
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

CONF_DIR = Path(__file__).resolve().parent / "conf"
CONF_PKG = "pkg://retina.conf"  # the same folder, as Hydra finds it from an installed package
HELP_FLAGS = ("-h", "--help")
USAGE_ERROR = 2  # exit code of a bad command line
CKPT = "outputs/train/<date>/checkpoints/best.ckpt"


@dataclass(frozen=True)
class Command:
    """One command: ``retina NAME`` is ``python -m MODULE``."""

    module: str
    summary: str  # its line in `retina --help`
    usage: str  # `retina NAME --help`
    example: str  # one typical call, shown under errors too
    config: str | None = None  # Hydra commands: the config under retina/conf
    filled: tuple[str, ...] = ()  # `???` keys the command fills itself
    hints: dict[str, str] = field(default_factory=dict)  # example values for missing keys


TRAIN = """\
usage: retina train [group=option ...] [key=value ...]      (Hydra overrides; -m: a sweep)

Train and validate a detector; outputs/train/<date>/ gets the checkpoints (best.ckpt,
last.ckpt), metrics.json, logs and the evaluation report of best.ckpt (report/).

main options:
  experiment=NAME        a recipe: neon_gfl (default), neon_retinanet, retinanet_r50_1x, gfl_r50_1x
  data=neon_trees|coco|voc|yolo   coco: data.train_ann= data.train_images= data.val_ann=
                         data.val_images= (or data.root= for the COCO 2017 layout);
                         voc, yolo: data.root=DIR
  model=retinanet|gfl    model/backbone=resnet18|resnet50|mobilenet_v2|...
  loss=focal|softmax_focal|ohem|ghm|gfl     loss.gamma=2 loss.alpha=0.25 ...
  trainer=cpu|gpu|ddp    trainer.max_epochs=N, or any lightning.Trainer argument
  data.batch_size=N data.size=PX optim.lr=X logger=csv|tensorboard
  ckpt_path=FILE|last    resume        debug=fdr   one batch through everything
  hparams_search=focal_optuna|gfl_optuna          an Optuna study
every group and key: retina train --cfg job;  Hydra's own flags: retina train --hydra-help

examples:
  retina train                       the NEON tree-crown default (data from `make data`)
  retina train data=coco data.train_ann=train.json data.train_images=images \\
      data.val_ann=val.json data.val_images=images
  retina train -m experiment=neon_retinanet loss.gamma=0,2 loss.alpha=0.25,0.75"""

EVAL = f"""\
usage: retina eval ckpt_path=FILE [data=...] [out=DIR] [report.KEY=VALUE ...]

Validate a checkpoint with pycocotools, print its table and write the evaluation report
(metrics.json, per-class table, PR curves, confusion matrix, error breakdown, worst images)
into out (default: outputs/eval/<date>/).

options:
  ckpt_path=FILE         a checkpoint of retina train (required)
  data=coco data.val_ann=FILE data.val_images=DIR   other data (default: the checkpoint's)
  +data.root=DIR         the checkpoint's own data settings on another folder
  out=DIR                the report folder
  accelerator=auto|cpu|gpu
  report.score_thresh=0.3 report.iou_thresh=0.5 report.worst_images=N

example:
  retina eval ckpt_path={CKPT}"""

REPORT = """\
usage: retina report ann=FILE results=FILE out=DIR [images=DIR] [report.KEY=VALUE ...]

The evaluation report of a COCO results file against a COCO annotation file, no model.
A bad results entry is one line naming it (exit 2).

options:
  ann=FILE               COCO annotation file, the ground truth (required)
  results=FILE           COCO results: [{image_id, category_id, bbox: [x, y, w, h], score}]
                         (required; retina predict writes one)
  out=DIR                the report folder (required)
  images=DIR             folder of the annotation file's file_names: draws the worst images

example:
  retina report ann=val.json results=preds/results.json out=report images=val"""

PREDICT = f"""\
usage: retina predict model=FILE images=DIR_OR_GLOB out=DIR [draw=true] [key=value ...]

Run a model over image files: out/results.json (COCO results with the training data's
category ids), out/images.json (file name -> image id) and, with draw=true, out/drawn/*.png.

options:
  model=FILE             a checkpoint (.ckpt) or an export (.safetensors/.json, .pt, .onnx)
  images=PATH            a folder, a glob pattern ('photos/*.jpg') or one file
  out=DIR                output folder
  draw=true              also draw the boxes scoring >= draw_thresh
  draw_thresh=0.3  batch_size=4  device=cpu|cuda  progress=false
  ann=FILE               take the image ids from this COCO file (by file name)
  tile=N                 large images: N-px windows at native scale, merged across seams
                         (overlap=0.25 merge=nms|fusion); a GeoTIFF also gets out/geojson/

example:
  retina predict model={CKPT} images=my_photos out=preds draw=true
  retina predict model={CKPT} images=scene.tif out=preds tile=400"""

EXPORT = f"""\
usage: retina export ckpt_path=FILE format=safetensors|torchscript|onnx [out=PATH] [key=value ...]

Export a checkpoint for inference (pip install "retina-det[export]"): safetensors weights
with a JSON sidecar (eager PyTorch), or one TorchScript / ONNX graph (uint8 images in,
padded detections out). retina predict and retina.load read all of them.

options:
  ckpt_path=FILE         a checkpoint of retina train (required)
  format=onnx            safetensors | torchscript | onnx
  out=PATH               default: next to the checkpoint, with the format's suffix
  input_size=[H,W]       the graph's network input (default: the model's data.size)
  score_thresh=X nms_thresh=X max_det=N     fixed in the graph (default: the checkpoint's)
  opset=18               ONNX opset

example:
  retina export ckpt_path={CKPT} format=onnx out=model.onnx"""

PARITY = f"""\
usage: retina parity ckpt_path=FILE [ann=FILE images=DIR] [max_images=N] [key=value ...]

Eager PyTorch against its safetensors, TorchScript and ONNX Runtime exports on the same
images: detections matched one to one, the largest box and score differences, and mAP.

options:
  ckpt_path=FILE         a checkpoint of retina train (required)
  ann=FILE images=DIR    COCO images to compare on (default: the NEON validation tiles)
  max_images=N  num_random=2  batch_size=4  score_thresh=X  out_dir=DIR (keep the exports)

example:
  retina parity ckpt_path={CKPT} max_images=8"""

EXPORT_SPEED = f"""\
usage: retina export-speed ckpt_path=FILE [tile=400] [repeats=20] [threads=N] [image=FILE]

Milliseconds per tile (batch 1, the whole path) of ONNX Runtime, TorchScript and eager
PyTorch, repeats interleaved, with the ratio to eager.

options:
  ckpt_path=FILE         a checkpoint of retina train (required)
  tile=400  repeats=20  warmup=3  threads=N  image=FILE (default: a NEON tile; null: random)
  out_dir=DIR            keep the exports

example:
  retina export-speed ckpt_path={CKPT} tile=400"""

CONVERT = """\
usage: retina convert SOURCE PATH out=PATH [key=value ...]

A detector trained elsewhere as a retina checkpoint (DIR/model.ckpt) and safetensors
export, a retina checkpoint back to torchvision, or VOC / YOLO annotations as COCO JSON.

sources:
  torchvision FILE.pth out=DIR [variant=v1|v2] [bn_eps=X] [overrides=[KEY=VALUE,...]]
  mmdet FILE.pth out=DIR [model=retinanet|gfl] [style=pytorch|caffe] [mean=[...]]
                         [std=[...]] [bgr_to_rgb=true|false] [overrides=[...]]
  to-torchvision CKPT out=FILE.pth
  voc ROOT out=FILE.json [split=train] [classes=[a,b]] [difficult=ignore|keep]
                         [one_based=true] [skip_bad=true]
  yolo ROOT out=FILE.json split=val [skip_bad=true]

examples:
  retina convert torchvision retinanet_resnet50_fpn_coco-eeacb38b.pth out=converted/tv_v1
  retina convert voc data/VOCdevkit/VOC2012 split=train out=train.json"""

BENCH = """\
usage: retina bench speed|accuracy|eval|scene|serve|probe [key=value ...]

Benchmarks against torchvision's RetinaNet, each in one process and one run; write the
probe's number beside any timing.

  speed    train step, inference, loss and postprocess time and peak memory against
           torchvision's RetinaNet-R50-FPN: sizes=[512,640] batch=2 repeats=5 threads=N
           quick=true (256 px, 2 repeats) device=cpu|cuda precision=fp32|bf16-mixed
           channels_last=true compile=false (the torch.compile rows) memory=true
           out=FILE.json
  accuracy NEON mAP after the same CPU budget, ours against torchvision (a fair contender
           with our anchors, and torchvision's defaults): minutes=10 seeds=3 (or seed=0)
           models=[retinanet,gfl,torchvision_fair,torchvision_default] out=FILE.json
  eval     COCO evaluation time, faster-coco-eval against pycocotools: images=500 dets=100
           classes=80 repeats=3 out=FILE.json
  scene    a NEON model on the whole YELL scene, resized vs sliced: model=FILE tiles=[400]
           overlap=0.25 batch=4 draw=FILE.png out=FILE.json
  serve    a load test of retina serve on loopback: model=FILE requests=500 concurrency=8
           image=FILE max_batch=8 batch_timeout=0.01 time_limit=300 out=FILE.json
  probe    this machine's float32 matmul GFLOP/s

example:
  retina bench speed quick=true out=speed.json"""

SERVE = f"""\
usage: retina serve model=FILE [port=8000] [host=127.0.0.1] [key=value ...]

Serve a model over HTTP: POST /predict (image bytes or a multipart upload -> JSON boxes),
GET /health, GET /info, and GET / a page to try it. Requests are batched across clients.

options:
  model=FILE             a checkpoint (.ckpt) or an export (.safetensors/.json, .pt, .onnx)
  port=8000 (0: any free port)  host=127.0.0.1 (another host needs an API key)
  runtime=auto|eager     eager: checkpoints and safetensors; exports run as they load
  max_batch=8  batch_timeout=0.01  workers=1   images per call, seconds to wait, threads
  max_bytes=50000000  max_pixels=50000000      upload and image limits (413 over them)
  api_key=KEY            /predict and /info need header X-API-Key (default: $RETINA_API_KEY)
  device=cpu|cuda  grace=30   seconds SIGTERM waits for the requests in flight

example:
  retina serve model={CKPT} port=8000
  curl -H 'Content-Type: image/png' --data-binary @tile.png localhost:8000/predict"""

TILE = """\
usage: retina tile format=coco|voc|yolo (root=DIR [split=NAME] | ann=FILE images=DIR) out=DIR [key=value ...]

Cut large annotated images into overlapping training tiles: out/images/*.png and a checked
out/annotations.json (COCO). A box goes to every tile holding at least min_visible of its
area, clipped to the tile; the slivers below that are dropped and counted.

options:
  tile=400 overlap=0.25  window side and the fraction shared with each neighbour
  min_visible=0.5        visible-area fraction a clipped box needs to be kept
  keep_empty=false       also write tiles without boxes

example:
  retina tile format=voc root=my_voc out=tiles tile=400 overlap=0.25"""

SWEEP_REPORT = """\
usage: retina sweep-report DIR [metric=NAME] [minimize=true]

sweep.csv, sweep.md and sweep.png for a multirun directory (its job folders 0, 1, ...);
every `retina train -m` writes them when it ends, this writes them again (after a crash,
or ranked by another metric).

options:
  metric=val/mAP_50      rank and plot by this (default: the jobs' optimized_metric)
  minimize=true          lower is better (default: the sweeper's direction)

example:
  retina sweep-report outputs/train_multirun/<date> metric=val/mAP_50"""

COMMANDS: dict[str, Command] = {
    "train": Command("retina.train", "train and validate a detector, then write its report",
                     TRAIN, "retina train data=coco data.train_ann=train.json ...",
                     config="train", filled=("model.detector.head.num_classes",),
                     hints={"model.init_from": "converted/tv_v1/model.ckpt",
                            "data.root": "DIR"}),
    "eval": Command("retina.eval.__main__", "validate a checkpoint and write the evaluation report",
                    EVAL, f"retina eval ckpt_path={CKPT}", config="eval",
                    hints={"ckpt_path": CKPT}),
    "predict": Command("retina.predict", "run a checkpoint or an export over image files",
                       PREDICT, f"retina predict model={CKPT} images=my_photos out=preds"),
    "export": Command("retina.export.__main__", "export a checkpoint: safetensors, "
                      "TorchScript or ONNX", EXPORT,
                      f"retina export ckpt_path={CKPT} format=onnx", config="export",
                      hints={"ckpt_path": CKPT}),
    "report": Command("retina.eval.report", "the evaluation report of a COCO results file",
                      REPORT, "retina report ann=val.json results=results.json out=report",
                      config="eval_report",
                      hints={"ann": "val.json", "results": "results.json", "out": "report"}),
    "convert": Command("retina.convert.__main__", "torchvision / mmdetection detectors to "
                       "retina and back; VOC / YOLO to COCO JSON", CONVERT,
                       "retina convert torchvision FILE.pth out=DIR"),
    "parity": Command("retina.infer.parity", "compare eager, TorchScript and ONNX Runtime "
                      "detections", PARITY, f"retina parity ckpt_path={CKPT}", config="parity",
                      hints={"ckpt_path": CKPT}),
    "export-speed": Command("retina.infer.speed", "ms per tile: ONNX Runtime, TorchScript, "
                            "eager", EXPORT_SPEED, f"retina export-speed ckpt_path={CKPT}",
                            config="speed", hints={"ckpt_path": CKPT}),
    "serve": Command("retina.serve", "serve a model over HTTP: /predict, batched, with a "
                     "page to try it", SERVE, f"retina serve model={CKPT} port=8000"),
    "tile": Command("retina.data.tile", "cut large annotated images into training tiles",
                    TILE, "retina tile format=voc root=my_voc out=tiles tile=400"),
    "bench": Command("retina.bench.__main__", "speed, memory and accuracy against "
                     "torchvision's RetinaNet", BENCH, "retina bench speed quick=true"),
    "sweep-report": Command("retina.sweeps.report", "the summary table and figure of a sweep",
                            SWEEP_REPORT, "retina sweep-report outputs/train_multirun/<date>"),
}


def fail(message: str, example: str) -> NoReturn:
    """A bad command line: one line with an example, exit code 2."""
    print(f"error: {message} (example: {example})", file=sys.stderr)
    raise SystemExit(USAGE_ERROR)


def wants_help(argv: Iterable[str]) -> bool:
    return any(a in HELP_FLAGS for a in argv)


def print_usage(name: str) -> int:
    print(COMMANDS[name].usage)
    return 0


def suggest(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean X?)`` for a near miss, else nothing."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


# ---------------------------------------------------------------- Hydra commands


def missing_keys(config: str, argv: list[str], filled: Iterable[str] = ()) -> list[str]:
    """The ``???`` keys of ``config``, and the keys it lists in ``required``, that ``argv``'s
    overrides leave unset.

    Empty when the arguments compose only under Hydra's own command line (a sweep, ``--cfg``,
    ``-cd DIR``, a bad override): Hydra reports those itself.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    if any(a.startswith("-") and a not in ("-m", "--multirun") for a in argv):
        return []
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            cfg = compose(config, overrides=[a for a in argv if not a.startswith("-")])
    except (HydraException, OmegaConfBaseException):
        return []
    finally:
        GlobalHydra.instance().clear()
    unset = unset_keys(cfg)
    # keys a recipe lists as required (a `???` in it would not survive the merge over a default)
    unset += [k for k in cfg.get("required") or [] if OmegaConf.select(cfg, k) is None
              and k not in unset]
    return [k for k in unset if k not in set(filled)]


def unset_keys(cfg: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose value is ``???``, interpolations left unresolved (``${hydra:...}`` has
    no value outside a run)."""
    found = []
    for key in cfg.keys() if isinstance(cfg, DictConfig) else range(len(cfg)):
        if OmegaConf.is_missing(cfg, key):
            found.append(f"{prefix}{key}")
        elif not OmegaConf.is_interpolation(cfg, key) and OmegaConf.is_config(cfg[key]):
            found += unset_keys(cfg[key], f"{prefix}{key}.")
    return found


def check_hydra_args(name: str, args: list[str]) -> None:
    """A key of the Hydra command ``name`` left ``???`` by ``args``: one line (exit 2)."""
    cmd = COMMANDS[name]
    missing = missing_keys(cmd.config, args, cmd.filled)
    if missing:
        given = [a for a in args if a not in ("-m", "--multirun")]
        needed = [f"{k}={cmd.hints.get(k, '...')}" for k in missing]
        fail(f"missing {', '.join(missing)}", " ".join(["retina", name, *given, *needed]))


def hydra_command(name: str, task: Callable[[Any], Any]) -> Callable[[list[str] | None], int]:
    """``main(argv)`` of a Hydra command: ``--help`` prints its usage; a key left ``???`` is one
    line before Hydra starts (so no run directory is made); the rest is ``@hydra.main``."""
    import hydra

    cmd = COMMANDS[name]

    def main(argv: list[str] | None = None) -> int:
        args = sys.argv[1:] if argv is None else list(argv)
        if wants_help(args):
            return print_usage(name)
        check_hydra_args(name, args)
        typed = sys.argv

        @functools.wraps(task)  # Hydra names the job and finds the configs by the task
        def task_as_typed(cfg):
            # the command line as typed (``retina train ...``): Lightning's DDP launcher starts
            # the other processes with it
            sys.argv = typed
            return task(cfg)

        run = hydra.main(version_base="1.3", config_path=CONF_PKG, config_name=cmd.config)
        sys.argv = [typed[0], *args]  # what Hydra parses
        try:
            run(task_as_typed)()
        finally:
            sys.argv = typed
        return 0

    main.__doc__ = f"``retina {name}`` / ``python -m {cmd.module}``: {cmd.summary}."
    return main


# ---------------------------------------------------------------- key=value commands

T = TypeVar("T")


def check_keys(argv: list[str], known: list[str], example: str) -> None:
    """Every argument is ``key=value`` with a key of ``known``, or one line (exit 2)."""
    for arg in argv:
        key = arg.split("=", 1)[0]
        if "=" not in arg:
            fail(f"expected key=value, got {arg!r}", example)
        if key not in known:
            fail(f"unknown option {key!r}{suggest(key, known)}; options: {', '.join(known)}",
                 example)


def parse_options(schema: type[T], argv: list[str], example: str) -> T:
    """``key=value`` arguments over the defaults of the dataclass ``schema``; an unknown key, a
    value of the wrong type or a required (``MISSING``) key left out is one line with
    ``example`` (exit 2)."""
    known = [f.name for f in fields(schema)]
    check_keys(argv, known, example)
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.from_dotlist(argv))
    except OmegaConfBaseException as err:  # a value of the wrong type
        fail(f"{err.full_key}: {str(err).splitlines()[0]}", example)
    missing = sorted(OmegaConf.missing_keys(cfg), key=known.index)
    if missing:
        fail(f"missing {', '.join(k + '=...' for k in missing)}", example)
    return OmegaConf.to_object(cfg)


def split_positional(argv: list[str], count: int, what: str, example: str,
                     ) -> tuple[list[str], list[str]]:
    """The first ``count`` arguments (``what`` names them in the error) and the options."""
    head = argv[:count]
    if len(head) < count or any("=" in a for a in head):
        fail(f"expected {what} first, got {' '.join(argv) or 'nothing'}", example)
    return head, argv[count:]
