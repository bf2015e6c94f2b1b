"""Build, train and evaluate from composed configs: what ``retina.train`` and ``retina.eval``
run (their entry points only call these)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import EarlyStopping, ModelSummary, ProgressBar
from omegaconf import DictConfig, OmegaConf, open_dict

from retina.cli import suggest
from retina.data.collate import SIZE_DIVISIBLE
from retina.data.transforms import network_input_size
from retina.training.atomic_io import with_atomic_checkpoint_io
from retina.training.check import WARN_BELOW, Geometry, setup_line
from retina.training.checkpoint import (
    load_checkpoint,
    module_from_checkpoint,
    run_config,
    run_config_json,
)
from retina.training.config import check_required, derive, recipe_line
from retina.training.cpu_budget import apply_cpu_budget
from retina.training.loggers import build_loggers, finish_loggers
from retina.training.nonfinite import NonFiniteGuard
from retina.training.plots import plot_training
from retina.training.resume import check_resume, resolve_ckpt
from retina.training.summary import FlopsSummary

log = logging.getLogger(__name__)


def build(cfg: DictConfig):
    """Datamodule and LightningModule from a composed config, its derived settings filled in
    (:func:`retina.training.config.derive`); sets torch's CPU threads and the loader workers
    (``threads``, ``data.num_workers``; null: :func:`cpu_budget`)."""
    check_required(cfg)
    with open_dict(cfg):
        cfg.data.num_workers = apply_cpu_budget(cfg.get("threads"), cfg.data.get("num_workers"),
                                                cfg.trainer.get("accelerator"))
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    derive(cfg, datamodule)
    module = instantiate(
        cfg.model,
        class_names=datamodule.class_names,
        cat_ids=datamodule.cat_ids,
        run_config=run_config_json(cfg),
    )
    module.example_input_array = example_input(cfg.data)
    skip = bool(OmegaConf.select(cfg, "train.skip_nonfinite", default=False))
    module.nonfinite = NonFiniteGuard(skip, Path(cfg.paths.output_dir) / "nonfinite")
    return datamodule, module


def check_anchors(cfg: DictConfig, datamodule, module) -> float:
    """The set-up part of ``retina check``: the recall ceiling of (up to 200) training images
    with the model's anchors and its criterion's assigner, one log line; a warning below
    :data:`retina.training.check.WARN_BELOW`. Returns the ceiling."""
    if datamodule.train_dataset is None:
        return 1.0
    value, line = setup_line(datamodule.train_dataset, module.detector.anchors,
                             module.criterion.assigner, Geometry.of(cfg.data))
    log.log(logging.WARNING if value < WARN_BELOW else logging.INFO, "%s", line)
    return value


def example_input(data: DictConfig) -> torch.Tensor | None:
    """A (1, 3, H, W) batch at the training input size of ``data``
    (:func:`retina.data.transforms.network_input_size`): Lightning's model summary runs it to
    count each layer's FLOPs. None when the data keeps each image's size."""
    hw = network_input_size(data.get("size"), data.get("min_size"), data.get("max_size"),
                            data.get("size_divisible") or SIZE_DIVISIBLE)
    return None if hw is None else torch.zeros(1, 3, *hw)


def val_metrics(trainer: L.Trainer, module) -> dict[str, float]:
    """The ``val/*`` numbers of the last validation: those logged, and ``val/AP/<class name>``
    for every class (the logger gets the first few only; -1 for a class without boxes)."""
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    return metrics | {f"val/AP/{name}": ap for name, ap in module.last_class_ap.items()}


def run_extent(trainer: L.Trainer) -> dict:
    """How far a finished fit got: ``epoch`` and ``global_step`` done, ``epochs_planned``
    (max_epochs; -1 or None: none) and ``stopped_early``: fewer epochs than planned (or, with
    no epoch limit, fewer steps than max_steps), whatever limit stopped it."""
    planned = trainer.max_epochs
    if planned is not None and planned >= 0:
        early = trainer.current_epoch < planned
    else:
        early = 0 < trainer.max_steps and trainer.global_step < trainer.max_steps
    return {"epoch": trainer.current_epoch, "global_step": trainer.global_step,
            "epochs_planned": planned, "stopped_early": early}


class NoAdvertisements(logging.Filter):
    """Drops Lightning's tips about its cloud products from the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


for _name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
    logging.getLogger(_name).addFilter(NoAdvertisements())


def early_stopping(cfg: DictConfig) -> EarlyStopping | None:
    """``early_stop.patience=N``: stop when the metric ``best.ckpt`` is chosen by (val/mAP) has
    not improved by ``early_stop.min_delta`` in N validations; None without a patience."""
    patience = OmegaConf.select(cfg, "early_stop.patience")
    if not patience:
        return None
    saver = OmegaConf.select(cfg, "callbacks.model_checkpoint") or {}
    return EarlyStopping(monitor=saver.get("monitor") or "val/mAP",
                         mode=saver.get("mode") or "max", patience=int(patience),
                         min_delta=float(OmegaConf.select(cfg, "early_stop.min_delta") or 0.0),
                         check_on_train_epoch_end=False)


def weights_described(trainer: L.Trainer, stopper: EarlyStopping | None) -> dict:
    """Which weights the numbers of ``metrics.json`` are, and why the run ended."""
    extent = run_extent(trainer)
    fired = stopper is not None and stopper.stopped_epoch > 0
    reason = ("early_stop" if fired else "limit" if extent["stopped_early"] else "recipe")
    return extent | {
        "weights": f"the final weights, saved as checkpoints/last.ckpt (epoch "
                   f"{trainer.current_epoch}, step {trainer.global_step}); report/ describes "
                   "checkpoints/best.ckpt",
        "stop_reason": reason,
    }


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, validate, write ``metrics.json`` into the run directory and return the metrics."""
    log.info("%s", recipe_line())
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    loggers = build_loggers(cfg.get("logger"))  # first: a missing package stops it at once
    ckpt = resolve_ckpt(cfg.get("ckpt_path"), cfg.paths.output_dir,
                        Path(cfg.paths.log_dir, cfg.task_name))
    datamodule, module = build(cfg)
    check_anchors(cfg, datamodule, module)
    if ckpt:
        check_resume(ckpt, cfg, force=bool(OmegaConf.select(cfg, "resume.force", default=False)))
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    stopper = early_stopping(cfg)
    callbacks += [stopper] if stopper else []
    if cfg.trainer.get("enable_progress_bar") is False:  # Lightning refuses a bar then
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    if cfg.trainer.get("enable_model_summary") is not False and not any(
            isinstance(c, ModelSummary) for c in callbacks):
        callbacks.append(FlopsSummary())  # parameters and FLOPs at the training input size
    plugins = cfg.trainer.get("plugins")
    plugins = instantiate(plugins, _convert_="all") if OmegaConf.is_config(plugins) else plugins
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                                     plugins=with_atomic_checkpoint_io(plugins))
    start = time.monotonic()
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt)
    stale = module.validated_step != trainer.global_step
    if stale and not trainer.interrupted and not datamodule.no_validation:
        # stopped between validations (max_steps, max_time, an interval that does not divide
        # the epochs): the numbers are those of the weights the run ends with and saves
        log.info("validating the final weights (step %d; last validation: step %d)",
                 trainer.global_step, module.validated_step)
        trainer.validate(module, datamodule=datamodule, verbose=False)
    finish_loggers(loggers)

    metrics = val_metrics(trainer, module) | weights_described(trainer, stopper)
    metrics["train_seconds"] = round(time.monotonic() - start, 1)  # fit + final validation
    if datamodule.no_validation:
        metrics["no_validation"] = datamodule.no_validation
        log.warning("NO VALIDATION: %s", datamodule.no_validation)
    if metrics["stop_reason"] == "early_stop":
        log.warning("EARLY STOPPING after %d of %d planned epochs: %s did not improve for %d "
                    "validations (best %.4f)", trainer.current_epoch, trainer.max_epochs,
                    stopper.monitor, stopper.patience, float(stopper.best_score))
    elif metrics["stopped_early"]:
        log.warning("STOPPED EARLY: %d of %d planned epochs (step %d): a limit (max_steps, "
                    "max_time, ...) ended the run; its numbers are not those of the full recipe",
                    trainer.current_epoch, trainer.max_epochs, trainer.global_step)
    if not trainer.is_global_zero:  # under DDP one process writes the files
        return metrics
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    for logger in loggers:
        csv_file = Path(getattr(logger, "log_dir", "") or "", "metrics.csv")
        if csv_file.is_file():
            log.info("curves: %s", plot_training(csv_file, out / "training.png"))
    if module.last_coco_table:
        log.info("validation (pycocotools):\n%s", module.last_coco_table)
    log.info("metrics: %s -> %s", json.dumps(metrics), out / "metrics.json")
    return metrics


def eval_data(given: DictConfig | None, trained: DictConfig) -> DictConfig:
    """The data ``retina.eval`` validates on: a whole data config (``data=coco ...``) replaces
    the checkpoint's; bare keys (``+data.root=DIR``) change the checkpoint's own, whose input
    size, resize and padding stay."""
    if not given:
        return trained
    if "_target_" in given:
        return given
    unknown = [k for k in given if k not in trained]
    if unknown:
        raise ValueError(f"data.{unknown[0]}: not a setting of the checkpoint's data"
                         f"{suggest(unknown[0], list(trained))}; it has "
                         f"{', '.join('data.' + k for k in trained)}")
    return OmegaConf.merge(trained, given)


def checkpoint_and_data(ckpt_path: str | Path, data: DictConfig | None = None,
                        num_workers: int | None = None):
    """The trained module of a checkpoint (eval mode) and the datamodule it validates on, set up
    for validation.

    Args:
        ckpt_path: a checkpoint of ``retina.train``.
        data: a ``data`` config to validate on (None: the data the checkpoint was trained on;
            see :func:`eval_data`).
        num_workers: loader workers (None: the data config's).
    """
    ckpt = load_checkpoint(ckpt_path)
    data = eval_data(data, run_config(ckpt).data)
    if num_workers is not None:
        data.num_workers = num_workers
    datamodule = instantiate(data)
    datamodule.prepare_data()
    datamodule.setup("validate")
    return module_from_checkpoint(ckpt), datamodule


def evaluate_checkpoint(
    ckpt_path: str | Path, data: DictConfig | None = None, accelerator: str = "auto",
    devices: int | list[int] = 1, max_det: int | None = None,
):
    """Rebuild the model from the checkpoint's config and validate it on one device.

    Args:
        ckpt_path: a checkpoint of ``retina.train``.
        data: a ``data`` config to validate on (None: the data the checkpoint was trained on;
            see :func:`eval_data`).
        accelerator: Lightning's accelerator name.
        devices: Lightning's ``devices`` (one device: ``1`` or ``[index]``).
        max_det: detections kept per image (None: the model's own); more than COCO's 100
            are scored by the report (``retina.analysis.report.write_report``).

    Returns:
        ``(module, datamodule, metrics)``: the validated module (its ``last_results``,
        ``last_image_ids``, ``last_coco_table`` hold what was scored), the datamodule set
        up for validation, and :func:`val_metrics`.
    """
    module, datamodule = checkpoint_and_data(ckpt_path, data)
    if max_det is not None:
        module.postprocess.max_det = max_det
    return module, datamodule, validate_module(module, datamodule, accelerator, devices=devices)


def validate_module(module, datamodule, accelerator: str = "auto", progress: bool = True,
                    devices: int | list[int] = 1) -> dict[str, float]:
    """Validate a module on one device, outside of a training run; :func:`val_metrics`."""
    trainer = L.Trainer(accelerator=accelerator, devices=devices, logger=False,
                        enable_checkpointing=False, enable_model_summary=False,
                        enable_progress_bar=progress)
    trainer.validate(module, datamodule=datamodule, verbose=False)
    return val_metrics(trainer, module)
