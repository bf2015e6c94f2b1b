"""Analysis behind the notebooks: checkpoints, predictions, focal-loss numbers, GFL distributions.

Everything a notebook computes lives here (tested in tests/analysis/ and
tests/e2e/test_explore.py); the notebooks only call these functions and draw with
:mod:`retina.analysis.viz`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import torch
from hydra.utils import instantiate
from torch import Tensor

from retina.assign import IGNORE
from retina.losses.functional import sigmoid_focal_loss
from retina.model.head import prior_bias
from retina.ops.boxes import anchor_points
from retina.ops.levels import flatten_levels, scale_to_original
from retina.ops.postprocess import Postprocess
from retina.training.checkpoint import load_checkpoint, run_config
from retina.training.config import compose_run
from retina.training.module import DetectionModule
from retina.training.run import build, checkpoint_and_data, train, validate_module

log = logging.getLogger(__name__)

NOTEBOOK_DIR = Path("outputs") / "notebooks"  # under the current directory, like the runs
QUICKSTART_ENV = "RETINA_QUICKSTART_CKPT"  # a checkpoint the notebooks use, when set
# The quickstart's short budget: the real default recipe (neon_gfl), at most 2 CPU minutes of
# training (6 epochs of the 39 NEON training tiles, ~60 steps, on 2 idle cores) and one validation.
QUICKSTART_OVERRIDES = (
    "trainer.max_epochs=6",
    "trainer.max_time=00:00:02:00",
    "trainer.check_val_every_n_epoch=6",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "callbacks.lr_monitor=null",
    "callbacks.ema=null",  # an average over ~60 steps lags the weights too much
    "data.num_workers=0",
)


# --- checkpoints -------------------------------------------------------------------------

def head_name(ckpt_path: str | Path) -> str:
    """Class name of the head a ``retina.train`` checkpoint was trained with (``GFLHead``...)."""
    head = run_config(load_checkpoint(ckpt_path)).model.detector.head
    return head._target_.rsplit(".", 1)[-1]


def newest_train_checkpoint(
    log_dir: str | Path = "outputs", head: str | None = None,
) -> Path | None:
    """The newest ``<log_dir>/train/*/checkpoints/best.ckpt`` (what ``make train`` writes).

    Args:
        log_dir: ``paths.log_dir`` of the training runs.
        head: only checkpoints of this head class (e.g. ``"GFLHead"``); None: any.

    Returns:
        its path, or None when there is none.
    """
    found = sorted(Path(log_dir, "train").glob("*/checkpoints/best.ckpt"),
                   key=lambda p: p.stat().st_mtime, reverse=True)
    for path in found:
        try:
            if head is None or head_name(path) == head:
                return path
        except (ValueError, KeyError) as err:  # an unreadable or foreign file: skip it
            log.warning("skipping %s: %s", path, err)
    return None


def train_quickstart(out_dir: str | Path = NOTEBOOK_DIR / "quickstart",
                     overrides: tuple[str, ...] = QUICKSTART_OVERRIDES) -> Path:
    """Train the default recipe (``conf/train.yaml``, experiment ``neon_gfl``) briefly into
    ``out_dir``; its ``checkpoints/best.ckpt``, or ``last.ckpt`` when ``max_time`` ended the
    run before its validation."""
    out_dir = Path(out_dir)
    shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)  # else Lightning writes best-v1
    cfg = compose_run(list(overrides), out_dir)
    metrics = train(cfg)
    log.info("quickstart training: %s", metrics)
    best = out_dir / "checkpoints" / "best.ckpt"
    return best if best.is_file() else out_dir / "checkpoints" / "last.ckpt"


def quickstart_checkpoint(
    log_dir: str | Path = "outputs",
    out_dir: str | Path = NOTEBOOK_DIR / "quickstart",
    overrides: tuple[str, ...] = QUICKSTART_OVERRIDES,
) -> Path:
    """A trained GFL checkpoint for the notebooks, trained at most once.

    In order: the file named by the environment variable ``RETINA_QUICKSTART_CKPT`` (what
    the tests use, so that the notebooks see the same model on every machine); the newest
    ``make train`` checkpoint of a GFL model under ``log_dir``; the quickstart checkpoint
    cached in ``out_dir`` (if trained with the same ``overrides``); else a short training
    (:func:`train_quickstart`) into ``out_dir``.
    """
    named = os.environ.get(QUICKSTART_ENV)
    if named:
        if not Path(named).is_file():
            raise FileNotFoundError(f"{QUICKSTART_ENV}={named}: no such checkpoint file")
        return Path(named)
    found = newest_train_checkpoint(log_dir, head="GFLHead")
    if found is not None:
        return found
    out_dir = Path(out_dir)
    stamp = out_dir / "overrides.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == list(overrides):
        for name in ("best.ckpt", "last.ckpt"):
            if (out_dir / "checkpoints" / name).is_file():
                return out_dir / "checkpoints" / name
    stamp.unlink(missing_ok=True)
    ckpt = train_quickstart(out_dir, overrides)
    stamp.write_text(json.dumps(list(overrides)))
    return ckpt


def load_module(ckpt_path: str | Path, num_workers: int = 0):
    """The trained module (eval mode) and its validation data, rebuilt from a checkpoint
    (:func:`retina.training.run.checkpoint_and_data`).

    Returns:
        ``(module, datamodule)``; the datamodule is set up for validation.
    """
    return checkpoint_and_data(ckpt_path, num_workers=num_workers)


def build_module(experiment: str, overrides: tuple[str, ...] = ()):
    """An untrained module and its set-up datamodule from the real config
    (``experiment=<experiment>`` plus ``overrides``), as ``retina.train`` builds them."""
    cfg = compose_run([f"experiment={experiment}", "data.num_workers=0", *overrides],
                      NOTEBOOK_DIR / "build")
    return build(cfg)[::-1]  # (module, datamodule)


# --- predictions -------------------------------------------------------------------------

def neon_datamodule(overrides: tuple[str, ...] = ()):
    """The default config's datamodule (NEON tree crowns), set up for fitting."""
    cfg = compose_run(["data.num_workers=0", *overrides], NOTEBOOK_DIR / "data")
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def examples(dataset, indices: list[int]) -> tuple[list[Tensor], list[Tensor]]:
    """Images of a ``CocoDetection`` as stored (3, H, W) uint8 (no transforms) and their
    ground-truth boxes (n, 4) x1y1x2y2."""
    transforms, dataset.transforms = dataset.transforms, None
    try:
        pairs = [dataset[i] for i in indices]
    finally:
        dataset.transforms = transforms
    images = [im.as_subclass(Tensor) for im, _ in pairs]
    return images, [t["boxes"].as_subclass(Tensor) for _, t in pairs]


def val_examples(datamodule, indices: list[int]) -> tuple[list[Tensor], list[Tensor]]:
    """:func:`examples` of the validation split."""
    return examples(datamodule.val_dataset, indices)


def predict_val(module: DetectionModule, datamodule, indices: list[int]) -> list[dict[str, Tensor]]:
    """The module's detections on the given validation images, in original image pixels."""
    dataset = datamodule.val_dataset
    batch = datamodule.collate_fn([dataset[i] for i in indices])
    return module.predict_batch(batch)


def validate(module: DetectionModule, datamodule) -> tuple[dict[str, float], str]:
    """Validate on CPU as training does: ``val/*`` metrics and pycocotools' summary table."""
    metrics = validate_module(module, datamodule, accelerator="cpu", progress=False)
    return metrics, module.last_coco_table


def text_table(rows: list[dict], digits: int = 3) -> str:
    """Rows of equal keys as an aligned text table (floats rounded to ``digits``)."""
    if not rows:
        return ""
    cols = list(rows[0])
    cells = [[f"{r[c]:.{digits}f}" if isinstance(r[c], float) else str(r[c]) for c in cols]
             for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


# --- focal loss --------------------------------------------------------------------------

def focal_curves(
    p_t: Tensor, gammas: list[float], alpha: float = -1.0, positive: bool = True,
) -> dict[float, Tensor]:
    """Loss of an anchor that gives its true answer the probability ``p_t``, per gamma.

    Computed with :func:`retina.losses.sigmoid_focal_loss`: a positive (target 1) with
    score ``p_t``, or a negative (target 0) with score ``1 - p_t``. Without ``alpha`` both
    are the same curve; gamma 0 is the cross entropy.

    Returns:
        ``{gamma: (P,) loss}``.
    """
    p = p_t.double() if positive else 1 - p_t.double()
    logits = torch.logit(p).float()
    targets = torch.full_like(logits, 1.0 if positive else 0.0)
    return {g: sigmoid_focal_loss(logits, targets, alpha=alpha, gamma=g) for g in gammas}


def anchor_targets(module: DetectionModule, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """Class logits of a sigmoid RetinaNet module on a batch, and their one-hot targets.

    Anchors are assigned by the module's criterion (:meth:`retina.losses.Criterion.targets`),
    as in training.

    Returns:
        logits (V, K) and targets (V, K) in {0, 1} of the V non-ignored anchors of the batch.
    """
    if module.detector.head.background_class or module.detector.anchors.num_anchors == 1:
        raise ValueError("anchor_targets needs a sigmoid RetinaNet module "
                         f"(experiment=neon_retinanet), not {type(module.criterion).__name__}")
    cls_maps, _ = module.detector(batch["images"], batch["image_sizes"])
    level_anchors = module.detector.level_anchors(cls_maps)
    k = module.num_classes
    logits = flatten_levels(cls_maps, k)  # (B, N, K)
    labels = module.criterion.targets(torch.cat(level_anchors), [len(a) for a in level_anchors],
                                      batch["boxes"], batch["labels"]).labels  # (B, N)
    valid = labels != IGNORE  # (B, N)
    targets = torch.zeros_like(logits)
    fg = labels >= 0
    targets[fg] = torch.nn.functional.one_hot(labels[fg], k).to(targets)
    return logits[valid], targets[valid]


def set_prior(module: DetectionModule, prior_prob: float | None) -> None:
    """Set the class-prediction bias to ``logit(prior_prob)``, or to 0 when None (the
    "zero bias" start: every score 0.5)."""
    bias = module.detector.head.cls_pred.bias
    with torch.no_grad():
        bias.fill_(0.0 if prior_prob is None else prior_bias(prior_prob))


@torch.no_grad()
def first_losses(
    module: DetectionModule, batch: dict[str, Tensor], prior_prob: float = 0.01,
    gamma: float = 2.0,
) -> dict[str, float]:
    """``loss_cls`` of the untrained module on ``batch`` with the prior init and with a zero
    bias, each with focal loss (``gamma``) and with gamma 0 (alpha-weighted cross entropy).

    The module's bias and ``criterion.gamma`` are restored afterwards.

    Returns:
        ``{"prior, focal": .., "prior, CE": .., "zero bias, focal": .., "zero bias, CE": ..}``.
    """
    head, criterion = module.detector.head, module.criterion
    saved_bias, saved_gamma = head.cls_pred.bias.clone(), criterion.gamma
    out = {}
    try:
        for init, prior in (("prior", prior_prob), ("zero bias", None)):
            set_prior(module, prior)
            for name, g in (("focal", gamma), ("CE", 0.0)):
                criterion.gamma = g
                out[f"{init}, {name}"] = float(module.losses(batch)["loss_cls"])
    finally:
        head.cls_pred.bias.copy_(saved_bias)
        criterion.gamma = saved_gamma
    return out


def loss_share_by_pt(
    logits: Tensor, targets: Tensor, edges: list[float], gamma: float, alpha: float = 0.25,
) -> list[dict[str, float]]:
    """How much of the summed classification loss comes from positives and negatives
    in each ``p_t`` bin (the probability given to the true answer).

    Args:
        logits: (...) class logits.
        targets: (...) 0/1.
        edges: increasing bin edges in [0, 1]; bin i is ``edges[i] <= p_t < edges[i+1]``
            (the last bin includes its upper edge).
        gamma: focusing parameter (0: cross entropy).
        alpha: positive weight (negative: off).

    Returns:
        one row per bin and kind (``neg`` first): ``kind``, ``p_t`` (the bin as text),
        ``count``, ``share`` of the total loss (the shares sum to 1).
    """
    logits, targets = logits.detach().float().flatten(), targets.detach().float().flatten()
    loss = sigmoid_focal_loss(logits, targets, alpha=alpha, gamma=gamma)  # (V,)
    p = logits.sigmoid()
    p_t = torch.where(targets > 0.5, p, 1 - p)
    total = loss.sum().clamp(min=torch.finfo(loss.dtype).tiny)
    rows = []
    for kind, mask in (("neg", targets < 0.5), ("pos", targets >= 0.5)):
        for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
            last = i == len(edges) - 2
            inside = mask & (p_t >= lo) & ((p_t <= hi) if last else (p_t < hi))
            rows.append({"kind": kind, "p_t": f"[{lo:g}, {hi:g}{']' if last else ')'}",
                         "count": int(inside.sum()), "share": float(loss[inside].sum() / total)})
    return rows


def fit_batch(
    module: DetectionModule, batch: dict[str, Tensor], steps: int, lr: float = 1e-3,
) -> list[float]:
    """A few AdamW steps on one batch (to get scores away from their init); the losses."""
    module.train()
    opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=lr)
    history = []
    for _ in range(steps):
        losses = module.losses(batch)
        loss = sum(v for k, v in losses.items() if k.startswith("loss_"))
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
    module.eval()
    return history


# --- GFL distributions -------------------------------------------------------------------

class DistributionPostprocess(Postprocess):
    """:class:`Postprocess` whose detections also carry each box's side distributions:
    ``probs`` (D, 4, R+1) over the bins 0..R and ``side_px`` (D, 4), the pixels per bin of
    each side (the anchor stride, in network-input pixels)."""

    @classmethod
    def like(cls, postprocess: Postprocess) -> DistributionPostprocess:
        """The same settings as ``postprocess`` (whose coder must be a ``DistanceCoder``)."""
        if not hasattr(postprocess.coder, "reg_max"):
            raise ValueError(f"{type(postprocess.coder).__name__} has no side distributions: "
                             "use a GFL model (experiment=neon_gfl)")
        return cls(postprocess.coder, postprocess.score_thresh, postprocess.topk,
                   postprocess.nms_thresh, postprocess.max_det)

    def _decode(self, box: Tensor, anchors: Tensor, sizes: Tensor) -> dict[str, Tensor]:
        out = super()._decode(box, anchors, sizes)
        r1 = self.coder.reg_max + 1
        out["probs"] = box.float().unflatten(-1, (4, r1)).softmax(-1)  # (..., 4, R+1)
        strides = anchor_points(anchors.float(), self.coder.anchor_scale)[1]  # (...)
        out["side_px"] = strides[..., None].expand(*strides.shape, 4)  # (..., 4)
        return out


@torch.no_grad()
def detections_with_distributions(
    module: DetectionModule, batch: dict[str, Tensor],
) -> list[dict[str, Tensor]]:
    """A GFL module's detections on a batch, in original image pixels, with ``spread``
    (D, 4), ``probs`` (D, 4, R+1) and ``side_px`` (D, 4) pixels per bin (original pixels)."""
    post = DistributionPostprocess.like(module.postprocess)
    cls_maps, box_maps = module.detector(batch["images"])
    dets = post(cls_maps, box_maps, module.detector.level_anchors(cls_maps), batch["image_sizes"])
    dets = scale_to_original(dets, batch["image_sizes"], batch["orig_sizes"])
    ratio = batch["orig_sizes"].float() / batch["image_sizes"].float()  # (B, 2) h w
    ratio = ratio.flip(1).repeat(1, 2)  # (B, 4) w h w h, as the sides l t r b
    return [{**d, "side_px": d["side_px"] * r} for d, r in zip(dets, ratio)]


def score_floor(detections: list[dict[str, Tensor]], cap: float = 0.2, keep: int = 30) -> float:
    """A score threshold for reviewing detections: ``cap``, lowered to the ``keep``-th best
    score when fewer than ``keep`` detections reach ``cap`` (a briefly trained model scores
    low), so that there is always something to look at."""
    scores = torch.cat([d["scores"].detach().float().cpu() for d in detections] or [torch.zeros(0)])
    if len(scores) == 0:
        return cap
    kth = float(scores.topk(min(keep, len(scores))).values[-1])
    return min(cap, kth)


def val_detections(module: DetectionModule, datamodule, limit: int | None = None,
                   ) -> tuple[list[int], list[dict[str, Tensor]]]:
    """Detections with distributions (:func:`detections_with_distributions`) over the
    validation set (its first ``limit`` images); image ids and detections, in dataset order."""
    ids, dets = [], []
    for batch in datamodule.val_dataloader():
        ids += batch["image_ids"].tolist()
        dets += detections_with_distributions(module, batch)
        if limit is not None and len(ids) >= limit:
            break
    return ids[:limit], dets[:limit]
