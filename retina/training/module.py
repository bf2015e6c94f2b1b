"""The LightningModule: composes network, anchors, criterion and postprocess."""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

import lightning as L
import torch
import torch.distributed as dist
from pycocotools.coco import COCO
from torch import Tensor

from retina.data.coco import load_coco
from retina.losses.criterion import Criterion
from retina.model.detector import Detector
from retina.ops.inference import detect
from retina.ops.levels import flatten_levels
from retina.ops.postprocess import Postprocess
from retina.training.coco_eval import (
    BACKENDS,
    check_backend,
    per_class_metrics,
    run_cocoeval,
    summarize,
    to_coco_results,
)
from retina.training.init_from import init_detector
from retina.training.nonfinite import NonFiniteGuard

Batch = dict[str, Tensor]  # see retina.data.collate
# val/AP/<class name> goes to the logger for the first this many classes with validation boxes
# (label order); metrics.json has every class (retina.training.run)
MAX_LOGGED_CLASSES = 20


def logged_class_ap(
    class_ap: dict[str, float], limit: int = MAX_LOGGED_CLASSES
) -> dict[str, float]:
    """``{"val/AP/<name>": AP}`` for the first ``limit`` classes (in the given order) that have
    an AP: a class without validation boxes (-1) has none to plot."""
    with_boxes = [(name, ap) for name, ap in class_ap.items() if ap > -1]
    return {f"val/AP/{name}": ap for name, ap in with_boxes[:limit]}


def param_groups(model: torch.nn.Module, weight_decay: float, no_decay_norm_bias: bool):
    """Parameter groups; with ``no_decay_norm_bias`` norms, biases and scales get no decay."""
    if not no_decay_norm_bias:
        return [{"params": [p for p in model.parameters() if p.requires_grad]}]
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


class CocoDetectionTask(L.LightningModule):
    """What every detector module here shares: COCO validation and optimizer set-up.

    Subclasses implement ``losses(batch)`` and ``predict_batch(batch) -> detections``
    in original image pixels; validation turns them into pycocotools' numbers against
    the datamodule's ``val_ann`` file, gathered once per image across processes. After a
    validation ``last_results`` (COCO entries), ``last_image_ids``, ``last_coco_table`` and
    ``last_class_ap`` (``{class name: AP}``, -1 without ground truth) hold what it scored.

    Args:
        optimizer: partial taking parameter groups.
        scheduler: partial taking ``(optimizer, total_steps)``; stepped every iteration.
        no_decay_norm_bias: no weight decay on 1-d parameters (norms, biases).
        cat_ids: dataset category id of each contiguous label.
        eval_backend: the COCOeval that scores validation, one of
            :data:`retina.training.coco_eval.BACKENDS` (the same numbers).
    """

    def __init__(
        self,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None,
        no_decay_norm_bias: bool,
        cat_ids: list[int],
        eval_backend: str = BACKENDS[0],
    ) -> None:
        super().__init__()
        self.optimizer_fn = optimizer
        self.scheduler_fn = scheduler
        self.no_decay_norm_bias = no_decay_norm_bias
        self.cat_ids = list(cat_ids)
        self.eval_backend = check_backend(eval_backend, "model.eval_backend")
        self._results: list[dict] = []
        self._image_ids: list[int] = []
        self._coco_gt: COCO | None = None
        self.last_coco_table = ""
        self.validated_step = -1  # global step of the last validation (sanity checks aside)
        self.last_results: list[dict] = []
        self.last_image_ids: list[int] = []
        self.last_class_ap: dict[str, float] = {}
        self.nonfinite = NonFiniteGuard()  # retina.train sets train.skip_nonfinite and the run dir

    def losses(self, batch: Batch) -> dict[str, Tensor]:
        """``loss_*`` terms (summed for the gradient) and other logged values."""
        raise NotImplementedError

    def predict_batch(self, batch: Batch) -> list[dict[str, Tensor]]:
        """Detections in original image pixels for a collated batch."""
        raise NotImplementedError

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor | None:
        losses = self.losses(batch)
        loss = sum(v for k, v in losses.items() if k.startswith("loss_"))
        bs = batch["images"].shape[0]
        go_on = self.nonfinite(loss, losses, batch, self.current_epoch, self.global_step)
        if self.nonfinite.skip:
            self.log("train/skipped_nonfinite", float(self.nonfinite.skipped), batch_size=bs)
        if not go_on:
            return None  # Lightning then runs no backward and no optimizer step
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        for k, v in losses.items():
            self.log(f"train/{k}", v.float(), batch_size=bs)
        return loss


    def on_validation_epoch_start(self) -> None:
        self._results, self._image_ids = [], []

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        dets = self.predict_batch(batch)
        ids = batch["image_ids"].tolist()
        self._image_ids.extend(ids)
        self._results.extend(to_coco_results(ids, dets, self.cat_ids))

    def on_validation_epoch_end(self) -> None:
        results, image_ids = self._results, self._image_ids
        if self.trainer.world_size > 1:  # this trainer's processes (a later 1-device eval: none)
            gathered = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, (results, image_ids))
            # a distributed sampler may repeat images to even out ranks: keep each once
            seen, results, image_ids = set(), [], []
            for res, ids in gathered:
                new = set(ids) - seen
                results += [r for r in res if r["image_id"] in new]
                image_ids += sorted(new)
                seen |= new
        if not self.trainer.sanity_checking:
            self.validated_step = self.trainer.global_step
        coco_gt = self.coco_gt()
        ev = run_cocoeval(coco_gt, results, image_ids, backend=self.eval_backend)
        metrics, self.last_coco_table = summarize(ev)
        self.last_results, self.last_image_ids = results, image_ids
        self.last_class_ap = {coco_gt.cats[c]["name"]: m["AP"]
                              for c, m in per_class_metrics(ev).items()}
        for name, value in metrics.items():
            if name in ("mAP", "mAP_50", "mAP_75", "mAP_small", "mAP_medium", "mAP_large", "AR_100"):
                self.log(f"val/{name}", value, prog_bar=name in ("mAP", "mAP_50"), sync_dist=False)
        for key, ap in logged_class_ap(self.last_class_ap).items():
            self.log(key, ap, sync_dist=False)

    def coco_gt(self) -> COCO:
        if self._coco_gt is None:
            self._coco_gt = load_coco(self.trainer.datamodule.val_ann)
        return self._coco_gt

    def configure_optimizers(self):
        groups = param_groups(self, self.optimizer_fn.keywords.get("weight_decay", 0.0),
                              self.no_decay_norm_bias)
        optimizer = self.optimizer_fn(groups)
        if self.scheduler_fn is None:
            return optimizer
        total = int(self.trainer.estimated_stepping_batches)
        scheduler = self.scheduler_fn(optimizer, total_steps=total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class DetectionModule(CocoDetectionTask):
    """Training and COCO evaluation of a dense detector.

    The box coder is declared once, here: the criterion and the postprocess are built
    with it.

    Args:
        detector: the pure network (images -> per-level maps), with its anchor generator.
        coder: the box coder of the head's box outputs.
        criterion: builds the training criterion from ``coder`` (see
            :mod:`retina.losses.criterion`).
        postprocess: builds the postprocess (decoder + NMS) from ``coder``.
        optimizer: partial taking parameter groups.
        scheduler: partial taking ``(optimizer, total_steps)``; stepped every iteration.
        no_decay_norm_bias: no weight decay on 1-d parameters (norms, biases).
        class_names: name of each contiguous label (stored in checkpoints).
        cat_ids: dataset category id of each label (stored in checkpoints).
        run_config: the resolved run config as JSON (stored in checkpoints to rebuild the model).
        init_from: a retina ``.ckpt`` or ``.safetensors`` file whose Detector weights replace
            the initial ones, checked strictly but for a class predictor of another number
            of classes, which keeps its prior (see :mod:`retina.training.init_from`).
        eval_backend: the COCOeval of validation: ``faster-coco-eval`` or ``pycocotools``
            (the reference), the same numbers.
        channels_last: the detector's weights and the input batches in channels-last memory
            layout (the same numbers; speed depends on the machine, see docs/benchmarks.md).
        compile: ``torch.compile`` the detector's forward for training and validation:
            ``True``, or a dict of ``torch.compile`` keyword arguments (``{mode:
            max-autotune}``, ``{backend: aot_eager}``). The loss and the postprocess, whose
            shapes change with every batch, stay eager. Needs a C compiler on CPU (inductor).
    """

    def __init__(
        self,
        detector: Detector,
        coder,
        criterion: Callable[..., Criterion],
        postprocess: Callable[..., Postprocess],
        optimizer: Callable[..., torch.optim.Optimizer] = partial(torch.optim.AdamW, lr=1e-4),
        scheduler: Callable[..., Any] | None = None,
        no_decay_norm_bias: bool = False,
        class_names: list[str] | None = None,
        cat_ids: list[int] | None = None,
        run_config: str | None = None,
        init_from: str | None = None,
        eval_backend: str = BACKENDS[0],
        channels_last: bool = False,
        compile: bool | dict = False,
    ) -> None:
        num_classes = detector.head.num_classes
        cat_ids = list(cat_ids or range(1, num_classes + 1))
        super().__init__(optimizer, scheduler, no_decay_norm_bias, cat_ids, eval_backend)
        self.detector = detector
        if init_from:
            init_detector(detector, init_from, run_config)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        detector.to(memory_format=self.memory_format)
        if compile:  # in place: the state dict keeps its keys (no ``_orig_mod.``)
            detector.compile(**({} if compile is True else dict(compile)))
        self.criterion = criterion(coder=coder)
        self.postprocess = postprocess(coder=coder)
        needs_bg = self.criterion.background_class
        if detector.head.background_class != needs_bg:
            raise ValueError(
                f"{type(self.criterion).__name__} needs a head {'with' if needs_bg else 'without'} "
                "a background channel (model.detector.head.background_class, which "
                "retina.training.config.derive sets from the loss)"
            )
        self.num_classes = num_classes
        self.class_names = list(class_names or [str(i) for i in range(num_classes)])
        self.save_hyperparameters(
            {"class_names": self.class_names, "cat_ids": self.cat_ids, "run_config": run_config}
        )

    def forward(
        self, images: Tensor, image_sizes: Tensor | None = None
    ) -> tuple[list[Tensor], list[Tensor]]:
        return self.detector(images.contiguous(memory_format=self.memory_format), image_sizes)

    def losses(self, batch: Batch) -> dict[str, Tensor]:
        cls_maps, box_maps = self(batch["images"], batch["image_sizes"])
        level_anchors = self.detector.level_anchors(cls_maps)
        anchors = torch.cat(level_anchors)  # (N, 4)
        a = self.detector.anchors.num_anchors
        cls = flatten_levels(cls_maps, cls_maps[0].shape[1] // a)  # (B, N, K[+1])
        box = flatten_levels(box_maps, box_maps[0].shape[1] // a)  # (B, N, C)
        level_sizes = [len(la) for la in level_anchors]
        return self.criterion(cls, box, anchors, batch["boxes"], batch["labels"], level_sizes)

    @torch.no_grad()
    def predict_batch(self, batch: Batch) -> list[dict[str, Tensor]]:
        """Detections in original image pixels for a collated batch (:func:`detect`, the path
        of every predictor and export)."""
        images = batch["images"].contiguous(memory_format=self.memory_format)
        return detect(self.detector, self.postprocess, images, batch["image_sizes"],
                      batch["orig_sizes"])
