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
import fnmatch
import functools
import glob
import logging
import os
import re
import shutil
import sys
import textwrap
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from retina import options
from retina.compat import REMOVED_IN
from retina.conf import with_recipe
from retina.schema import model_file_problem

CONF_DIR = Path(__file__).resolve().parent / "conf"
CONF_PKG = "pkg://retina.conf"  # the same folder, as Hydra finds it from an installed package
HELP_FLAGS = ("-h", "--help")
USAGE_ERROR = 2  # exit code of a bad command line
CKPT = "outputs/train/<date>/checkpoints/best.ckpt"


@dataclass(frozen=True)
class Command:
    """One command: ``retina NAME`` is ``python -m MODULE``.

    ``retina NAME --help`` prints ``usage``; for a command with ``options`` (a dataclass of
    :mod:`retina.options`) the option table is made from them and put where ``usage`` says
    ``{options}``.
    """

    module: str
    summary: str  # its line in `retina --help`
    usage: str  # `retina NAME --help`
    example: str  # one typical call, shown under errors too
    config: str | None = None  # Hydra commands: the config under retina/conf
    filled: tuple[str, ...] = ()  # `???` keys the command fills itself
    hints: dict[str, str] = field(default_factory=dict)  # example values for missing keys
    options: type | None = None  # key=value commands: their options (retina.options)
    prefixes: tuple[str, ...] = ()  # PREFIX.KEY=VALUE options passed on (eval: data., report.)
    positional: int = 0  # arguments before the options (sweep-report: DIR)
    recipe: bool = False  # Hydra commands whose recipe follows the data (retina.conf)

    def help(self) -> str:
        return self.usage.replace("{options}", options_table(self.options)) if self.options \
            else self.usage


def choices_of(group: str) -> str:
    return "|".join(sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml")))


TRAIN = f"""\
usage: retina train [group=option ...] [key=value ...]      (Hydra overrides; -m: a sweep)

Train and validate a detector; outputs/train/<date>/ gets the checkpoints (best.ckpt,
last.ckpt), metrics.json (the final weights: last.ckpt), logs and the evaluation report of
best.ckpt (report/).

main options (every group and key: retina train --cfg job):
  experiment=NAME        a recipe (default by the data: neon_gfl for NEON, photo for coco,
                         voc, yolo; aerial: NEON's for any data):
{textwrap.fill(choices_of("experiment").replace("|", ", "), 96, initial_indent=" " * 25,
               subsequent_indent=" " * 25)}
  data={choices_of("data")}   coco: data.root=DIR (COCO 2017 layout) or data.train_ann=
                         data.train_images= data.val_ann= data.val_images=; voc, yolo: data.root=
  model={choices_of("model")}   model/backbone={choices_of("model/backbone")}
  loss={choices_of("loss")}    the RetinaNet recipes' focal losses take
                         loss.gamma= loss.alpha= (experiment=neon_retinanet loss.gamma=1.5)
  device=auto|cpu|cuda|cuda:N   trainer={choices_of("trainer")}   trainer.max_epochs=N, or any
                         lightning.Trainer argument as trainer.NAME=VALUE
  data.batch_size=N data.size=PX optim.lr=X logger={choices_of("logger")}
  early_stop.patience=N  stop when val/mAP has not improved in N validations
  ckpt_path=FILE|last    resume        debug={choices_of("debug")}
  hparams_search={choices_of("hparams_search")}   an Optuna study (-m)

examples:
  retina train                       the NEON tree-crown default (data from `make data`)
  retina train data=coco data.train_ann=train.json data.train_images=images \\
      data.val_ann=val.json data.val_images=images
  retina train -m experiment=neon_retinanet loss.gamma=0,2 loss.alpha=0.25,0.75"""

EVAL = f"""\
usage: retina eval model=FILE [data=...] [out=DIR] [report.KEY=VALUE ...]

Validate a checkpoint with pycocotools, print its table and write the evaluation report
(metrics.json, per-class table, PR curves, confusion matrix, error breakdown, worst images)
into out.

options:
{{options}}
  data.KEY=VALUE         with data=NAME: that data config's keys (coco: data.val_ann=FILE
                         data.val_images=DIR); alone: the checkpoint's own data, changed
  report.KEY=VALUE       report.score_thresh=0.3 report.iou_thresh=0.5 report.worst_images=N

examples:
  retina eval model={CKPT}
  retina eval model={CKPT} data=coco data.val_ann=val.json data.val_images=images"""

REPORT = """\
usage: retina report ann=FILE results=FILE out=DIR [images=DIR] [report.KEY=VALUE ...]

The evaluation report of a COCO results file against a COCO annotation file, no model.
A bad results entry is one line naming it (exit 2).

options:
{options}
  report.KEY=VALUE       report.score_thresh=0.3 report.iou_thresh=0.5 report.worst_images=N

example:
  retina report ann=val.json results=preds/results.json out=report images=val"""

PREDICT = f"""\
usage: retina predict model=FILE images=DIR_OR_GLOB out=DIR [draw=true] [key=value ...]

Run a model over image files: out/results.json (COCO results with the training data's
category ids), out/images.json (file name -> image id), with draw=true out/drawn/*.png, and
for a georeferenced image (GeoTIFF) out/geojson/.

options:
{{options}}

examples:
  retina predict model={CKPT} images=my_photos out=preds draw=true
  retina predict model={CKPT} images=scene.tif out=preds tile=400 conf=0.3 max_det=1000"""

EXPORT = f"""\
usage: retina export model=FILE format=safetensors|torchscript|onnx [out=PATH] [key=value ...]

Export a checkpoint for inference (pip install "retina-det[export]"): safetensors weights
with a JSON sidecar (eager PyTorch), or one TorchScript / ONNX graph (uint8 images in,
padded detections out). retina predict and retina.load read all of them.

options:
{{options}}

example:
  retina export model={CKPT} format=onnx out=model.onnx"""

PARITY = f"""\
usage: retina parity model=FILE [ann=FILE images=DIR] [max_images=N] [key=value ...]

Eager PyTorch against its safetensors, TorchScript and ONNX Runtime exports on the same
images: detections matched one to one, the largest box and score differences, and mAP.

options:
{{options}}

example:
  retina parity model={CKPT} max_images=8"""

EXPORT_SPEED = f"""\
usage: retina export-speed model=FILE [tile=400] [repeats=20] [threads=N] [image=FILE]

Milliseconds per tile (batch 1, the whole path) of ONNX Runtime, TorchScript and eager
PyTorch, repeats interleaved, with the ratio to eager.

options:
{{options}}

example:
  retina export-speed model={CKPT} tile=400"""

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
  scene    a NEON model on the whole YELL scene, resized vs sliced, s/MP per runtime:
           model=FILE tiles=[400] overlap=0.25 batch=4 runtimes=[eager,auto] (eager, auto,
           onnx, openvino) tta=flip full_pass=true draw=FILE.png out=FILE.json
  serve    a load test of retina serve on loopback: model=FILE requests=500 concurrency=8
           image=FILE time_limit=300 out=FILE.json, and the server's max_batch=8
           batch_timeout=0.01 workers=1 runtime=auto
  probe    this machine's float32 matmul GFLOP/s

example:
  retina bench speed quick=true out=speed.json"""

SERVE = f"""\
usage: retina serve model=FILE [port=8000] [host=127.0.0.1] [key=value ...]

Serve a model over HTTP: POST /predict (image bytes or a multipart upload -> JSON boxes),
GET /health, GET /info, and GET / a page to try it. Requests are batched across clients.

options:
{{options}}

example:
  retina serve model={CKPT} port=8000
  curl -H 'Content-Type: image/png' --data-binary @tile.png localhost:8000/predict"""

TILE = """\
usage: retina tile format=coco|voc|yolo (root=DIR [split=NAME] | ann=FILE images=DIR) out=DIR [key=value ...]

Cut large annotated images into overlapping training tiles: out/images/*.png and a checked
out/annotations.json (COCO). A box goes to every tile holding at least min_visible of its
area, clipped to the tile; the slivers below that are dropped and counted.

options:
{options}

example:
  retina tile format=voc root=my_voc out=tiles tile=400 overlap=0.25"""

SWEEP_REPORT = """\
usage: retina sweep-report DIR [metric=NAME] [minimize=true]

sweep.csv, sweep.md and sweep.png for a multirun directory (its job folders 0, 1, ...);
every `retina train -m` writes them when it ends, this writes them again (after a crash,
or ranked by another metric).

options:
{options}

example:
  retina sweep-report outputs/train_multirun/<date> metric=val/mAP_50"""

CHECK = """\
usage: retina check [data=...] [experiment=...] [key=value ...]      (Hydra overrides)

The dataset doctor, before training: counts per split and class, images without boxes,
duplicate files, boxes outside or degenerate; box sizes at the training input against the
anchors; the recall ceiling (the share of boxes the assigner can ever make positive) per class
and size; and changes that lift it, each measured. Writes check.json and check.png
(outputs/check/<date>/). Takes retina train's options: the same recipe, anchors and input.

options:
  data=neon_trees|coco|voc|yolo ...    the data, as for retina train
  model.detector.anchors.anchor_scale=X data.size=PX ...   the settings to check
  check.out=DIR  check.max_images=1000 (null: all)  check.duplicates=false  check.suggest=false

examples:
  retina check                       NEON with the default recipe
  retina check data=voc data.root=my_voc"""

COMMANDS: dict[str, Command] = {
    "train": Command("retina.train", "train and validate a detector, then write its report",
                     TRAIN, "retina train data=coco data.train_ann=train.json ...",
                     config="train", filled=("model.detector.head.num_classes",),
                     hints={"model.init_from": "converted/tv_v1/model.ckpt",
                            "data.root": "DIR"}, recipe=True),
    "check": Command("retina.check", "the dataset doctor: counts, box sizes against the "
                     "anchors, the recall ceiling", CHECK, "retina check data=voc data.root=DIR",
                     config="check", filled=("model.detector.head.num_classes",),
                     hints={"data.root": "DIR"}, recipe=True),
    "eval": Command("retina.eval.__main__", "validate a checkpoint and write the evaluation report",
                    EVAL, f"retina eval model={CKPT}", options=options.EvalOptions,
                    prefixes=("data.", "report.")),
    "predict": Command("retina.predict", "run a checkpoint or an export over image files",
                       PREDICT, f"retina predict model={CKPT} images=my_photos out=preds",
                       options=options.PredictOptions),
    "export": Command("retina.export.__main__", "export a checkpoint: safetensors, "
                      "TorchScript or ONNX", EXPORT,
                      f"retina export model={CKPT} format=onnx", options=options.ExportOptions),
    "report": Command("retina.eval.report", "the evaluation report of a COCO results file",
                      REPORT, "retina report ann=val.json results=results.json out=report",
                      options=options.ReportOptions, prefixes=("report.",)),
    "convert": Command("retina.convert.__main__", "torchvision / mmdetection detectors to "
                       "retina and back; VOC / YOLO to COCO JSON", CONVERT,
                       "retina convert torchvision FILE.pth out=DIR"),
    "parity": Command("retina.infer.parity", "compare eager, TorchScript and ONNX Runtime "
                      "detections", PARITY, f"retina parity model={CKPT}",
                      options=options.ParityOptions),
    "export-speed": Command("retina.infer.speed", "ms per tile: ONNX Runtime, TorchScript, "
                            "eager", EXPORT_SPEED, f"retina export-speed model={CKPT}",
                            options=options.ExportSpeedOptions),
    "serve": Command("retina.serve", "serve a model over HTTP: /predict, batched, with a "
                     "page to try it", SERVE, f"retina serve model={CKPT} port=8000",
                     options=options.ServeOptions),
    "tile": Command("retina.data.tile", "cut large annotated images into training tiles",
                    TILE, "retina tile format=voc root=my_voc out=tiles tile=400",
                    options=options.TileOptions),
    "bench": Command("retina.bench.__main__", "speed, memory and accuracy against "
                     "torchvision's RetinaNet", BENCH, "retina bench speed quick=true"),
    "sweep-report": Command("retina.sweeps.report", "the summary table and figure of a sweep",
                            SWEEP_REPORT, "retina sweep-report outputs/train_multirun/<date>",
                            options=options.SweepReportOptions, positional=1),
}


def fail(message: str, example: str | None = None) -> NoReturn:
    """A bad command line: one line (with an example, if given), exit code 2."""
    print(f"error: {message}" + (f" (example: {example})" if example else ""), file=sys.stderr)
    raise SystemExit(USAGE_ERROR)


def wants_help(argv: Iterable[str]) -> bool:
    return any(a in HELP_FLAGS for a in argv)


def print_usage(name: str) -> int:
    print(COMMANDS[name].help())
    return 0


def suggest(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean X?)`` for a near miss (or a choice the word starts with, or that
    starts with the word: ``confidence`` -> ``conf``), else nothing."""
    choices = list(choices)
    close = difflib.get_close_matches(word, choices, n=1) or [
        c for c in choices if len(c) >= 3 and (word.startswith(c) or c.startswith(word))][:1]
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
        if key == "hydra" and not prefix:
            continue
        if OmegaConf.is_missing(cfg, key):
            found.append(f"{prefix}{key}")
        elif not OmegaConf.is_interpolation(cfg, key) and OmegaConf.is_config(cfg[key]):
            found += unset_keys(cfg[key], f"{prefix}{key}.")
    return found


def check_hydra_args(name: str, args: list[str]) -> list[str]:
    """Check the command line of the Hydra command ``name`` before Hydra starts (so before
    any run directory, download or data preparation): a misspelt group option, an unknown
    key (naming the group options that have it), a value of the wrong type or outside its
    range, a file or folder that does not exist, a key left ``???``, COCO data without its
    paths: one line each, exit 2. Returns ``args`` with ``device=`` as Lightning's keys.

    Hydra's own flags (``--hydra-help``, ``-cd DIR``, ...) are left to Hydra; in a sweep
    (``-m``) values with sweep syntax (``0,2``, ``interval(...)``) are not checked.
    """
    if (name, *args) in _CHECKED:  # `retina train` checks before the import, then main again
        return _CHECKED[(name, *args)]
    cmd = COMMANDS[name]
    typed = tuple(args)
    args = with_recipe(list(args)) if cmd.recipe else list(args)  # data=coco: experiment=photo
    given, flags = hydra_overrides([a for a in args if not a.startswith("device=")])
    args = device_as_trainer_keys(args)
    overrides, _ = hydra_overrides(args)
    if flags is None:  # a flag only Hydra understands
        return args
    example = " ".join(["retina", name, *args])
    sweep = any(f in ("-m", "--multirun") for f in flags)
    groups = {k: v for k, v in (o.split("=", 1) for o in overrides if "=" in o)
              if (CONF_DIR / k).is_dir()}
    for group, value in groups.items():
        listed = value.startswith("[") and value.endswith("]")  # logger=[csv,tensorboard]
        for choice in (value.strip("[]").split(",") if sweep or listed else [value]):
            check_group_choice(group, choice.strip(), None)
    # a sweep composes as its first job: each swept key at its first value
    jobs = [first_job(o) for o in overrides if first_job(o)] if sweep else overrides
    job_groups = {g: v if v.startswith("[") else v.split(",")[0].strip()
                  for g, v in groups.items()}
    base = compose_or_fail(cmd.config, [f"{g}={v}" for g, v in job_groups.items()], example)
    for arg in given:
        key, eq, text = arg.partition("=")
        if not eq or key in groups or key.startswith(("+", "~")) or key.startswith("hydra"):
            continue
        check_train_key(base, key.removeprefix("+"), text, sweep)
    cfg = compose_or_fail(cmd.config, jobs, example)
    missing = [k for k in unset_keys(cfg) + [
        k for k in cfg.get("required") or [] if OmegaConf.select(cfg, k) is None]
        if k not in cmd.filled]
    if missing:
        needed = [f"{k}={cmd.hints.get(k, '...')}" for k in dict.fromkeys(missing)]
        fail(f"missing {', '.join(dict.fromkeys(missing))}",
             " ".join(["retina", name, *[a for a in typed if a not in ("-m", "--multirun")],
                       *needed]))
    check_coco_paths(cfg, job_groups.get("data", "neon_trees"))
    _CHECKED[(name, *typed)] = args
    return args


_CHECKED: dict[tuple[str, ...], list[str]] = {}


def first_job(override: str) -> str | None:
    """A sweep's ``key=a,b`` as its first job's ``key=a``; a sweep function (``interval(...)``,
    ``choice(...)``, ``range(...)``) as None (that key keeps its config's value)."""
    key, _, value = override.partition("=")
    if re.match(r"\w+\(", value):
        return None
    if "," in value and not value.startswith(("[", "{")):
        return f"{key}={value.split(',')[0].strip()}"
    return override


def device_as_trainer_keys(args: list[str]) -> list[str]:
    """``device=auto|cpu|cuda|cuda:N`` (the other commands' option) as Lightning's
    ``trainer.accelerator`` and ``trainer.devices``."""
    out = []
    for arg in args:
        key, _, value = arg.partition("=")
        if key != "device":
            out.append(arg)
            continue
        check_rules_of(options.device, "device", value, None)
        accelerator, devices = lightning_device(value)
        out.append(f"trainer.accelerator={accelerator}")
        if devices != 1:
            out.append(f"trainer.devices={shown(devices)}")
    return out


def hydra_overrides(args: list[str]) -> tuple[list[str], list[str] | None]:
    """``(overrides, flags)`` of a Hydra command line; flags None when one is Hydra's own
    beyond ``-m``, ``--cfg job|hydra|all`` and ``--resolve``."""
    overrides, flags, skip = [], [], False
    for arg in args:
        if skip:
            skip = False
        elif arg in ("--cfg", "-c"):
            flags.append(arg)
            skip = True
        elif arg.startswith("-"):
            if arg not in ("-m", "--multirun", "--resolve"):
                return overrides, None
            flags.append(arg)
        else:
            overrides.append(arg)
    return overrides, flags


def compose_or_fail(config: str, overrides: list[str], example: str) -> DictConfig:
    """The config Hydra composes from ``overrides`` (its runtime values unset), or one line
    with the first line of Hydra's complaint."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            return compose(config, overrides=overrides, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as err:
        fail(str(err).strip().splitlines()[0].rstrip("."), example)
    finally:
        GlobalHydra.instance().clear()


def check_train_key(base: DictConfig, key: str, text: str, sweep: bool) -> None:
    """One ``key=value`` of ``retina train``: a key of the composed ``base`` config (else one
    line naming the group options that have it), of its default's type, within
    :data:`retina.options.TRAIN_RULES`."""
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(base, parent, throw_on_missing=False) if parent else base
    if not isinstance(node, DictConfig) or leaf not in node.keys():  # `in node`: not for ???
        fail(unknown_train_key(base, key))
    if sweep and re.match(r"\w+\(", text):  # interval(...), choice(...): Hydra's to check
        return
    if sweep and "," in text and not text.startswith(("[", "{")):
        for part in text.split(","):
            check_train_key(base, key, part.strip(), False)
        return
    value = OmegaConf.from_dotlist([f"v={text}"]).v
    default = None if OmegaConf.is_interpolation(node, leaf) or OmegaConf.is_missing(
        node, leaf) else node[leaf]
    any_type = any(fnmatch.fnmatchcase(key, p) for p in options.TRAIN_ANY_TYPE)
    if not any_type and not same_kind(default, value):
        fail(f"{key}={text}: expected {TYPE_WORDS.get(type(default), 'another type')}, e.g. "
             f"{key}={shown(default)}")
    if value is None or (key == "ckpt_path" and value == "last"):
        return
    for pattern, rule in options.TRAIN_RULES.items():
        if fnmatch.fnmatchcase(key, pattern):
            check_value(key, value, rule, None)


def unknown_train_key(base: DictConfig, key: str) -> str:
    """Why ``key`` is not in the composed config: a near miss, or the options of its group
    that have it (``loss.gamma`` under GFL: ``loss=focal`` has it)."""
    group, _, rest = key.partition(".")
    choices = base.hydra.runtime.choices
    current = choices.get(group)
    have = [o for o in group_choices(group) if o != current and has_key(group, o, rest)] \
        if (CONF_DIR / group).is_dir() else []
    if have:
        options_text = " and ".join(f"{group}={o}" for o in have)
        return (f"{key}: not a setting of this run's {group}={current}; {options_text} "
                f"{'has' if len(have) == 1 else 'have'} it (e.g. retina train {group}="
                f"{have[0]} {key}=...)")
    parent = key.rpartition(".")[0]
    node = OmegaConf.select(base, parent, throw_on_missing=False) if parent else base
    known = [f"{parent}.{k}" if parent else str(k) for k in node] if isinstance(
        node, DictConfig) else []
    hint = suggest(key, known) or suggest(key, all_keys(base))
    return f"unknown key {key}{hint}" + (f"; {parent} has {', '.join(known)}"
                                         if known and len(known) <= 12 else "")


def has_key(group: str, option: str, dotted: str) -> bool:
    """Whether ``conf/<group>/<option>.yaml`` (with the base it extends) has ``dotted``."""
    cfg = OmegaConf.load(CONF_DIR / group / f"{option}.yaml")
    for base in [d for d in cfg.get("defaults") or [] if isinstance(d, str) and d != "_self_"]:
        if (CONF_DIR / group / f"{base}.yaml").is_file() and has_key(group, base, dotted):
            return True
    return OmegaConf.select(cfg, dotted, throw_on_missing=False) is not None or (
        dotted.rpartition(".")[2] in (OmegaConf.select(cfg, dotted.rpartition(".")[0])
                                      if "." in dotted else cfg))


def all_keys(cfg: Any, prefix: str = "") -> list[str]:
    """Every dotted key of a config (Hydra's own node aside)."""
    out = []
    for key in cfg if isinstance(cfg, DictConfig) else []:
        if key == "hydra":
            continue
        dotted = f"{prefix}{key}"
        out.append(dotted)
        if not OmegaConf.is_interpolation(cfg, key) and isinstance(cfg.get(key), DictConfig):
            out += all_keys(cfg[key], dotted + ".")
    return out


def check_coco_paths(cfg: DictConfig, data: str) -> None:
    """COCO data (a DetectionDataModule) names data.root or all four of its paths."""
    node = OmegaConf.to_container(cfg.data, resolve=False)  # ${paths...}: a run's values
    if not str(node.get("_target_", "")).endswith("DetectionDataModule") or node.get("root"):
        return
    unset = [k for k in options.COCO_PATHS if node.get(k) is None]
    if unset:
        fail(f"data={data} needs data.root=DIR (the COCO 2017 layout) or "
             + " ".join(f"data.{k}={'FILE' if k.endswith('ann') else 'DIR'}"
                        for k in options.COCO_PATHS)
             + f" (unset: {', '.join('data.' + k for k in unset)})")


def remove_if_no_checkpoint(run_dir: Path) -> None:
    """Remove a failed run's directory (Hydra's config copy, its log) unless it holds a
    checkpoint, and the empty folders above it that the run made (``outputs/train``)."""
    if not run_dir.is_dir() or any(run_dir.rglob("*.ckpt")):
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    for parent in list(run_dir.parents)[:2]:  # outputs/train, outputs
        if parent.is_dir() and not any(parent.iterdir()) and parent != Path.cwd():
            parent.rmdir()


def hydra_command(name: str, task: Callable[[Any], Any]) -> Callable[[list[str] | None], int]:
    """``main(argv)`` of a Hydra command: ``--help`` prints its usage; a bad command line is one
    line before Hydra starts (:func:`check_hydra_args`: no run directory is made); the rest is
    ``@hydra.main``. A ValueError or FileNotFoundError of the task (a bad file found while
    reading the data) is one line too, exit 2, and the run directory goes if it holds no
    checkpoint (``RETINA_DEBUG=1``: the traceback, the directory kept)."""
    import hydra

    cmd = COMMANDS[name]

    def main(argv: list[str] | None = None) -> int:
        args = sys.argv[1:] if argv is None else list(argv)
        if wants_help(args):
            return print_usage(name)
        args = check_hydra_args(name, args)
        typed = sys.argv

        @functools.wraps(task)  # Hydra names the job and finds the configs by the task
        def task_as_typed(cfg):
            # the command line as typed (``retina train ...``): Lightning's DDP launcher starts
            # the other processes with it
            sys.argv = typed
            try:
                return task(cfg)
            except (ValueError, FileNotFoundError) as err:
                if os.environ.get("RETINA_DEBUG"):
                    raise
                remove_if_no_checkpoint(Path(cfg.paths.output_dir))
                print(f"error: {str(err).splitlines()[0]}", file=sys.stderr)
                raise SystemExit(USAGE_ERROR) from None

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
TYPE_WORDS = {int: "a whole number", float: "a number", bool: "true or false", str: "text",
              list: "a list like [a,b]"}
SAMPLES = {int: 10, float: 0.5, bool: True, list: ["a", "b"]}  # example values of a type


def check_keys(argv: list[str], known: list[str], example: str) -> None:
    """Every argument is ``key=value`` with a key of ``known``, or one line (exit 2)."""
    for arg in argv:
        key = arg.split("=", 1)[0]
        if "=" not in arg:
            fail(f"expected key=value, got {arg!r}", example)
        if key not in known:
            fail(f"unknown option {key!r}{suggest(key, known)}; options: {', '.join(known)}",
                 example)


_NOTED: set[str] = set()  # old names already told about in this process


def renamed(argv: list[str], rules: dict[str, options.Rules]) -> list[str]:
    """``argv`` with old option names (``ckpt_path=``, ``out_dir=``, ...) as today's, each
    named once on stderr."""
    old_to_new = {alias: name for name, r in rules.items() for alias in r.aliases}
    out = []
    for arg in argv:
        key, eq, value = arg.partition("=")
        if eq and key in old_to_new:
            if key not in _NOTED:
                print(f"note: {key}= is now {old_to_new[key]}= (the old name goes in retina "
                      f"{REMOVED_IN})", file=sys.stderr)
                _NOTED.add(key)
            arg = f"{old_to_new[key]}={value}"
        out.append(arg)
    return out


def shown(value: Any) -> str:
    """A value as it is typed on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ",".join(map(str, value)) + "]"
    return str(value)


def shown_number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def field_type(schema: type, name: str) -> type:
    """The value type of an option: ``int | None`` -> int, ``list[str]`` -> list."""
    hint = str(next(f.type for f in fields(schema) if f.name == name))
    for word, kind in (("list", list), ("bool", bool), ("int", int), ("float", float)):
        if hint.startswith(word) or f"{word} |" in hint or f"| {word}" in hint:
            return kind
    return str


def check_rules(cfg: Any, schema: type, example: str, given: Iterable[str] = ()) -> None:
    """Each value keeps its option's rules (choices, range, an existing file), or one line; the
    ``given`` options first (a mistake typed is named before a default's problem)."""
    rules = options.rules_of(schema)
    for name, rule in sorted(rules.items(), key=lambda item: item[0] not in set(given)):
        value = getattr(cfg, name)
        if value is not None and not OmegaConf.is_missing(cfg, name):
            check_value(name, value, rule, example)


def check_rules_of(make_option: Callable[[], Any], name: str, text: str, example: str | None
                   ) -> None:
    """``name=text`` against the rules of a shared option (``options.device``)."""
    check_value(name, OmegaConf.from_dotlist([f"v={text}"]).v,
                make_option().metadata[options.RULES], example)


def check_value(name: str, value: Any, rule: options.Rules, example: str | None) -> None:
    """``name=value`` within ``rule`` (pattern, choices, range, an existing path), or one line."""
    given = f"{name}={shown(value)}"
    if rule.pattern is not None and not re.fullmatch(rule.pattern, str(value)):
        fail(f"{given}: expected {rule.metavar or rule.pattern}", example)
    if rule.choices is not None and value not in rule.choices:
        fail(f"{given}: not one of {', '.join(map(str, rule.choices))}"
             f"{suggest(str(value), map(str, rule.choices))}", example)
    low, high, above = rule.low, rule.high, rule.above
    if isinstance(value, (int, float)) and not isinstance(value, bool) and (
            (low is not None and value < low) or (high is not None and value > high)
            or (above is not None and value <= above)):
        if low is not None and high is not None:
            bounds = f"between {shown_number(low)} and {shown_number(high)}"
        elif above is not None:
            bounds = f"above {shown_number(above)}" + (
                f" and at most {shown_number(high)}" if high is not None else "")
        else:
            bounds = f"at least {shown_number(low)}" if low is not None else (
                f"at most {shown_number(high)}")
        fail(f"{given}: must be {bounds}", example)
    if rule.exists:
        problem = path_problem(str(value), rule)
        if problem:
            parent = Path(str(value)).parent
            if problem.startswith("no such") and parent.is_dir():  # a typo: the nearest name
                problem += suggest(Path(str(value)).name, [p.name for p in parent.iterdir()])
            fail(f"{given}: {problem}", example)


def path_problem(value: str, rule: options.Rules) -> str | None:
    """What is wrong with the file or folder an option names (see ``Rules.exists``)."""
    path = Path(value)
    if rule.exists == "model":
        return model_file_problem(path, rule.model_kinds)
    if rule.exists == "glob":
        return None if path.exists() or glob.glob(value, recursive=True) else (
            "no such file or folder, and no file matches")
    ok = {"file": path.is_file(), "dir": path.is_dir(), "path": path.exists(),
          "json": path.is_file()}[rule.exists]
    if not ok:
        what = {"file": "file", "dir": "folder", "path": "file or folder", "json": "file"}
        other = " (it is a folder)" if rule.exists in ("file", "json") and path.is_dir() else (
            " (it is a file)" if rule.exists == "dir" and path.is_file() else "")
        return f"no such {what[rule.exists]}{other}"
    if rule.exists == "json":
        with path.open("rb") as f:
            start = f.read(4096).lstrip()[:1]
        if start not in (b"{", b"["):
            return "not a JSON file"
    return None


def split_prefixed(argv: list[str], prefixes: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """``argv`` split into its plain options and the ``PREFIX.KEY=VALUE`` ones of
    ``prefixes`` (``+data.root=`` counts as ``data.root=``, Hydra's old spelling)."""
    plain, prefixed = [], []
    for arg in argv:
        bare = arg.removeprefix("+")
        (prefixed if bare.startswith(prefixes) else plain).append(
            bare if bare.startswith(prefixes) else arg)
    return plain, prefixed


def parse_options(schema: type[T], argv: list[str], example: str) -> T:
    """``key=value`` arguments over the defaults of the dataclass ``schema`` (see
    :mod:`retina.options`): an old name is renamed with a note; an unknown key, a value of
    the wrong type, outside its choices or range, a file that does not exist, or a required
    key left out is one line with ``example`` (exit 2)."""
    known = [f.name for f in fields(schema)]
    argv = renamed(argv, options.rules_of(schema))
    check_keys(argv, known, example)
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.from_dotlist(argv))
    except OmegaConfBaseException as err:  # a value of the wrong type
        key = str(err.full_key)
        value = next((a.split("=", 1)[1] for a in argv if a.startswith(f"{key}=")), "")
        kind = field_type(schema, key)
        default = options.default_of(schema, key)
        sample = default if default not in (None, MISSING) else SAMPLES.get(kind, "...")
        fail(f"{key}={value}: expected {TYPE_WORDS.get(kind, 'another type')}, e.g. "
             f"{key}={shown(sample)}", example)
    missing = sorted(OmegaConf.missing_keys(cfg), key=known.index)
    if missing:
        fail(f"missing {', '.join(k + '=...' for k in missing)}", example)
    check_rules(cfg, schema, example, [a.split("=", 1)[0] for a in argv])
    return OmegaConf.to_object(cfg)


def parse_command(name: str, argv: list[str]) -> tuple[Any, list[str]]:
    """The options of command ``name`` (``argv`` after its positional arguments), checked, and
    its ``PREFIX.KEY=VALUE`` arguments (:attr:`Command.prefixes`), each ``key=value``."""
    cmd = COMMANDS[name]
    argv = argv[cmd.positional:]
    plain, prefixed = split_prefixed(argv, cmd.prefixes) if cmd.prefixes else (argv, [])
    for arg in prefixed:
        if "=" not in arg:
            fail(f"expected key=value, got {arg!r}", cmd.example)
    return parse_options(cmd.options, plain, cmd.example), prefixed


def key_value_command(name: str, task: Callable[..., Any]) -> Callable[[list[str] | None], int]:
    """``main(argv)`` of a ``key=value`` command: ``--help`` prints its usage (exit 0); bad
    options are one line (exit 2, :func:`parse_command`); then ``task(options, prefixed)``
    runs (``prefixed``: its ``PREFIX.KEY=VALUE`` arguments, for a command with
    :attr:`Command.prefixes`). A ValueError, FileNotFoundError or KeyError it raises (a bad
    file, a name that is not there) is one line too, exit 2; ``RETINA_DEBUG=1`` shows the
    traceback instead."""
    cmd = COMMANDS[name]

    def main(argv: list[str] | None = None) -> int:
        args = sys.argv[1:] if argv is None else list(argv)
        if wants_help(args):
            return print_usage(name)
        opts, prefixed = parse_command(name, args)
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
        try:
            task(opts, prefixed) if cmd.prefixes else task(opts)
        except (ValueError, FileNotFoundError, KeyError) as err:
            if os.environ.get("RETINA_DEBUG"):
                raise
            msg = str(err).splitlines()[0] if isinstance(err, KeyError) else str(err)
            print(f"error: {msg}", file=sys.stderr)
            return USAGE_ERROR
        return 0

    main.__doc__ = f"``retina {name}`` / ``python -m {cmd.module}``: {cmd.summary}."
    return main


def options_table(schema: type, indent: int = 2, width: int = 23) -> str:
    """The ``--help`` lines of a dataclass of options: ``name=DEFAULT  help``."""
    lines = []
    for name, rule in options.rules_of(schema).items():
        default = options.default_of(schema, name)
        value = rule.metavar or "..." if default is MISSING or default == "???" else shown(default)
        left = f"{' ' * indent}{name}={value}"
        text = rule.help + (" (required)" if default == "???" else "")
        pad = " " * (indent + width + 1)
        left = left.ljust(indent + width) + " " if len(left) < indent + width else left + "\n" + pad
        lines.append(left + textwrap.fill(text, 96, initial_indent=pad,
                                          subsequent_indent=pad)[len(pad):])
    return "\n".join(lines)


def group_choices(group: str) -> list[str]:
    """The options of a config group: the names of ``retina/conf/<group>/*.yaml``."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def check_group_choice(group: str, value: str, example: str | None) -> None:
    """``group=value`` names one of the group's configs (``null`` too), or one line."""
    choices = group_choices(group)
    if value not in (*choices, "null"):
        fail(f"{group}={value}: no such {group} config{suggest(value, choices)}; "
             f"{group}: {', '.join(choices)}", example)


def check_overrides(defaults: Any, dotlist: list[str], example: str) -> None:
    """``KEY=VALUE`` overrides of a plain config: each key one of ``defaults``'s, each value of
    its default's type (a number where the default is a number), or one line."""
    for arg in dotlist:
        key, _, text = arg.partition("=")
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(defaults, parent) if parent else defaults
        if not isinstance(node, DictConfig) or leaf not in node.keys():
            known = [f"{parent}.{k}" if parent else k for k in node] if isinstance(
                node, DictConfig) else []
            fail(f"unknown key {key}{suggest(key, known)}"
                 + (f"; {parent} has {', '.join(known)}" if known else ""), example)
        default = node[leaf] if not OmegaConf.is_interpolation(node, leaf) else None
        value = OmegaConf.from_dotlist([f"v={text}"]).v
        if not same_kind(default, value):
            fail(f"{key}={text}: expected {TYPE_WORDS.get(type(default), 'another type')}, e.g. "
                 f"{key}={shown(default)}", example)


def same_kind(default: Any, value: Any) -> bool:
    """Whether ``value`` may replace ``default``: anything replaces null and null anything; an
    int may stand for a float; otherwise the types agree."""
    if default is None or value is None or OmegaConf.is_config(default):
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


def torch_device(name: str) -> str:
    """``device=`` as a torch device: ``auto`` is the GPU when there is one, else the CPU."""
    if name == "gpu":
        return "cuda"
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def lightning_device(name: str) -> tuple[str, int | list[int]]:
    """``device=`` as Lightning's ``(accelerator, devices)``: ``cuda:1`` -> ``("gpu", [1])``."""
    kind, _, index = name.partition(":")
    accelerator = {"cuda": "gpu"}.get(kind, kind)
    return accelerator, [int(index)] if index else 1


def split_positional(argv: list[str], count: int, what: str, example: str,
                     ) -> tuple[list[str], list[str]]:
    """The first ``count`` arguments (``what`` names them in the error) and the options."""
    head = argv[:count]
    if len(head) < count or any("=" in a for a in head):
        fail(f"expected {what} first, got {' '.join(argv) or 'nothing'}", example)
    return head, argv[count:]


# ---------------------------------------------------------------- the reference page

def markdown() -> str:
    """docs/commands.md: every command's usage and options, made from :data:`COMMANDS` and
    :mod:`retina.options` (``python -m retina.cli > docs/commands.md``; a test keeps it so)."""
    parts = ["# Commands", "",
             "Every command, its options and their defaults, as `retina COMMAND --help` prints",
             "them. Made from the options' one definition in the code (`retina/options.py`):",
             "`python -m retina.cli > docs/commands.md` writes this page, and a test fails when",
             "it is out of date. A name means the same in every command: `model=` the model",
             "file (in `retina train`: the model config), `data=`, `out=`, `device=`, `conf=`,",
             "`iou=`, `max_det=`, `classes=`.", ""]
    for name, cmd in COMMANDS.items():
        head = cmd.help().split("\noptions:")[0] if cmd.options else cmd.help()
        parts += [f"## retina {name}", "", cmd.summary[0].upper() + cmd.summary[1:] + ".", "",
                  "```", head.strip(), "```", ""]
        if cmd.options:
            parts += ["| option | default | |", "|---|---|---|"]
            for key, rule in options.rules_of(cmd.options).items():
                default = options.default_of(cmd.options, key)
                shown_default = "required" if default == "???" else f"`{shown(default)}`"
                old = f" (was `{'`, `'.join(rule.aliases)}`)" if rule.aliases else ""
                parts.append(f"| `{key}` | {shown_default} | {rule.help}{old} |")
            parts.append("")
    return "\n".join(parts)


if __name__ == "__main__":
    print(markdown())
