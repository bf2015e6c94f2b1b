"""Write a converted detector: a retina checkpoint and its safetensors + JSON export.

The model is built from an experiment config (``conf/experiment/*_tv.yaml``,
``*_mmdet.yaml``), which holds the foreign model's inference settings and the recipe to
fine-tune it; the checkpoint stores that config like any ``retina.train`` checkpoint, so
``retina.eval``, ``retina.export``, ``retina.load``, ``module_from_checkpoint`` and
``model.init_from`` read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from torch import Tensor
from torchvision.models.detection import RetinaNet_ResNet50_FPN_Weights

from retina.convert.keys import ConversionError, convert_state
from retina.export.formats import export_safetensors, sha256
from retina.infer.predictor import from_checkpoint
from retina.training.atomic_io import AtomicCheckpointIO
from retina.training.checkpoint import run_config_json
from retina.training.config import compose_run
from retina.training.module import DetectionModule

CKPT_NAME = "model.ckpt"
EXPORT_NAME = "model.safetensors"


def coco91_names() -> list[str]:
    """torchvision's COCO labels: index = COCO category id, ``__background__`` at 0 and
    ``N/A`` where COCO has no category."""
    return list(RetinaNet_ResNet50_FPN_Weights.COCO_V1.meta["categories"])


def coco80() -> tuple[list[str], list[int]]:
    """The 80 COCO categories in id order: names and ids (mmdetection's labels 0..79)."""
    pairs = [(n, i) for i, n in enumerate(coco91_names()) if n not in ("__background__", "N/A")]
    return [n for n, _ in pairs], [i for _, i in pairs]


@dataclass
class Converted:
    """What a conversion wrote: ``checkpoint`` (.ckpt) and ``export`` (the JSON sidecar of
    the safetensors weights)."""

    checkpoint: Path
    export: Path


def build_module(experiment: str, overrides: list[str], class_names: list[str],
                 cat_ids: list[int], out_dir: Path) -> DetectionModule:
    """The module of ``experiment`` with ``overrides``, for ``len(class_names)`` classes,
    random weights (the experiment's backbone weights are null)."""
    if len(class_names) != len(cat_ids):
        raise ConversionError(f"{len(class_names)} class names for {len(cat_ids)} category ids")
    cfg = compose_run([f"experiment={experiment}", "model.init_from=null",
                       f"model.detector.head.num_classes={len(class_names)}", *overrides], out_dir)
    return instantiate(cfg.model, class_names=class_names, cat_ids=cat_ids,
                       run_config=run_config_json(cfg))


def write_converted(module: DetectionModule, state: dict[str, Tensor], table: dict[str, str],
                    out_dir: str | Path, source: dict) -> Converted:
    """Load the foreign ``state`` (renamed by ``table``, checked strictly) into ``module``'s
    Detector and write ``out_dir/model.ckpt`` and ``out_dir/model.safetensors`` + ``.json``.

    Args:
        module: from :func:`build_module`.
        state: the foreign tensors (BatchNorm counters are left out, see ``keys``).
        table: foreign prefix -> Detector prefix.
        out_dir: output folder.
        source: where the weights came from (``file`` and what else describes them),
            stored with the file's sha256 in the checkpoint and the export.
    """
    out_dir = Path(out_dir)
    source = {**source, "sha256": sha256(Path(source["file"]))}
    what = f"{source.get('format')} {source.get('file')}"
    mapped = convert_state(state, table, module.detector.state_dict(), what)
    module.detector.load_state_dict(mapped)
    ckpt = {
        "state_dict": module.state_dict(),
        "hyper_parameters": dict(module.hparams),
        "epoch": 0,
        "global_step": 0,
        "pytorch-lightning_version": L.__version__,
        "converted_from": source,
    }
    path = out_dir / CKPT_NAME
    AtomicCheckpointIO().save_checkpoint(ckpt, path)
    predictor = from_checkpoint(path)
    predictor.meta.source["converted_from"] = source
    return Converted(path, export_safetensors(predictor, out_dir / EXPORT_NAME))
