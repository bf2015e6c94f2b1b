"""The evaluation report: one COCOeval of a set of detections, and every view of it written
into one folder (what ``retina eval`` and ``retina report`` write).

==========================  =====================================================
``metrics.json``            pycocotools' 12 numbers, per class, best-F1 points, the
                            error breakdown, counts (and the uncertainty view)
``results.json``            the detections scored (COCO results, dataset category ids)
``per_class.csv``, ``.md``  AP, AP_50, AP_75, AR_100, boxes and detections per class
``pr_curves.png``           precision-recall at IoU 0.5 and 0.75, best-F1 points
``confusion_matrix.*``      classes (with boxes or detections) + background at
                            ``iou_thresh``/``score_thresh`` (``.csv`` counts,
                            ``_normalised.csv`` row shares, ``.png``)
``errors.md``, ``.png``     what each TIDE error type costs in mAP_50
``worst_images.md``         the images with the most missed and false boxes, drawn
                            in ``worst_images/`` when the images are at hand
``uncertainty.md``          GFL only: widest box distributions, spread vs. error
==========================  =====================================================
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import torch.distributed as dist
from lightning.fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from pycocotools.coco import COCO

from retina.analysis import confusion, errors, per_class, uncertainty_report, worst
from retina.analysis.matching import match
from retina.analysis.pr_curves import best_f1, plot_pr_curves
from retina.analysis.results import load_results
from retina.data.coco import load_coco
from retina.training.checkpoint import load_checkpoint
from retina.training.coco_eval import at_max_dets, run_cocoeval, summarize
from retina.training.run import evaluate_checkpoint

log = logging.getLogger(__name__)


def _finite(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


def write_report(
    coco_gt: COCO,
    results: list[dict],
    out: str | Path,
    image_ids: list[int] | None = None,
    images_dir: str | Path | None = None,
    iou_thresh: float = 0.5,
    score_thresh: float = 0.3,
    background_iou: float = 0.1,
    worst_images: int = 10,
    top_uncertain: int = 20,
    max_dets: int = 100,
    source: dict | None = None,
) -> dict:
    """Score ``results`` against ``coco_gt`` once and write every file of the report.

    Args:
        coco_gt: the ground truth.
        results: checked COCO results entries (optionally with ``spread``).
        out: the folder to write into (made if missing).
        image_ids: the images to score (None: all of ``coco_gt``).
        images_dir: the folder the ground truth's ``file_name`` is relative to (None: the
            worst images are listed, not drawn).
        iou_thresh: IoU at which the confusion matrix matches a detection to a box.
        score_thresh: lowest score of the confusion matrix, the worst images and the
            uncertainty list.
        background_iou: TIDE's background threshold of the error breakdown.
        worst_images: how many images ``worst_images.md`` lists and draws.
        top_uncertain: how many detections the uncertainty list shows.
        max_dets: detections per image scored; COCO's numbers count the best 100 of each
            image, more adds ``mAP_<n>``, ``mAP_50_<n>`` and ``AR_<n>`` (a whole scene).
        source: what was scored (the checkpoint, its epoch and step, the data), written
            first into ``metrics.json`` so that the numbers say which weights they describe.

    Returns:
        what ``metrics.json`` holds.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ev = run_cocoeval(coco_gt, results, image_ids, backend="pycocotools")  # matching: evalImgs
    stats, table = summarize(ev)
    log.info("pycocotools:\n%s", table)
    rows = per_class.per_class_rows(ev)
    per_class.write_csv(rows, out / "per_class.csv")
    (out / "per_class.md").write_text(per_class.to_markdown(rows))
    plot_pr_curves(ev, out / "pr_curves.png")

    matrix, names = confusion.drop_empty(
        confusion.confusion_matrix(coco_gt, results, ev.params.imgIds, iou_thresh, score_thresh),
        confusion.labels(coco_gt))
    confusion.write_csv(matrix, names, out / "confusion_matrix.csv")
    confusion.write_csv(confusion.normalised(matrix), names,
                        out / "confusion_matrix_normalised.csv")
    confusion.plot_confusion(matrix, names, out / "confusion_matrix.png", iou_thresh, score_thresh)

    breakdown = errors.breakdown(ev, background_iou)
    (out / "errors.md").write_text(errors.to_markdown(breakdown))
    errors.plot_errors(breakdown, out / "errors.png")

    matching = match(ev, 0.5)
    worst_rows = worst.image_rows(ev, matching, score_thresh)[:worst_images]
    drawn = {}
    if images_dir is not None:
        (out / "worst_images").mkdir(exist_ok=True)
        for rank, row in enumerate(worst_rows, 1):
            name = f"worst_images/{rank:02d}_image_{row['image_id']}.jpg"
            worst.draw_image(ev, row, images_dir, out / name)
            drawn[row["image_id"]] = name
    (out / "worst_images.md").write_text(worst.to_markdown(worst_rows, score_thresh, drawn))

    cat_name = {c: coco_gt.cats[c]["name"] for c in coco_gt.cats}
    metrics = {
        **({"source": source} if source else {}),
        **stats,
        "per_class": {r["class"]: {k: v for k, v in r.items() if k != "class"} for r in rows},
        "best_f1_iou50": {cat_name[c]: v for c, v in best_f1(ev, 0.5).items()},
        "confusion": {"iou_thresh": iou_thresh, "score_thresh": score_thresh},
        "errors": breakdown,
        "num_images": len(ev.params.imgIds),
        "num_detections": len(ev.cocoDt.anns),
        "max_dets": max_dets,  # COCO's numbers above count the best 100 per image
    }
    if max_dets > 100:
        metrics |= at_max_dets(coco_gt, results, image_ids, max_dets)
        log.info("counting up to %d detections per image: %s", max_dets,
                 {k: round(metrics[k], 4) for k in (f"mAP_{max_dets}", f"AR_{max_dets}")})
    if uncertainty_report.has_spread(ev):
        spread = uncertainty_report.spread_vs_error(ev, matching)
        widest = uncertainty_report.widest(ev, matching, top_uncertain, score_thresh)
        (out / "uncertainty.md").write_text(
            uncertainty_report.to_markdown(widest, spread, score_thresh))
        metrics["uncertainty"] = {k: _finite(v) for k, v in spread.items()}
    (out / "results.json").write_text(json.dumps(results))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    log.info("report -> %s", out)
    return metrics


def report_from_files(ann: str | Path, results: str | Path, out: str | Path,
                      images: str | Path | None = None, **settings) -> dict:
    """The report of a COCO results file against a COCO annotation file, no model
    (``settings``: the keyword arguments of :func:`write_report`)."""
    coco_gt = load_coco(ann)
    return write_report(coco_gt, load_results(results, coco_gt), out, None, images, **settings)


def report_from_checkpoint(ckpt_path: str | Path, out: str | Path, data: DictConfig | None = None,
                           accelerator: str = "auto", devices: int | list[int] = 1,
                           max_det: int | None = None, **settings) -> dict:
    """Validate a checkpoint (:func:`retina.training.run.evaluate_checkpoint`) and write the
    report of its detections on the validation images (``max_det``: detections kept and
    scored per image, None: the model's own)."""
    module, datamodule, _ = evaluate_checkpoint(ckpt_path, data, accelerator, devices, max_det)
    ckpt = load_checkpoint(ckpt_path)
    # Lightning stores the 0-based index of the epoch that saved it: epochs trained, as in
    # the run's metrics.json
    epoch = ckpt.get("epoch")
    source = {"checkpoint": str(ckpt_path), "epoch": None if epoch is None else epoch + 1,
              "global_step": ckpt.get("global_step"), "data": str(datamodule.val_ann)}
    return write_report(load_coco(datamodule.val_ann), module.last_results, out,
                        module.last_image_ids, datamodule.val_images,
                        max_dets=module.postprocess.max_det, source=source, **settings)


def _multi_process() -> bool:
    """Whether this process is one of several (DDP): then a new one-device Trainer would take
    the launcher's environment for its own and wait for the other processes."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return True
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def report_training_run(cfg: DictConfig) -> Path | None:
    """The report of a finished ``retina.train`` run's best checkpoint, in ``<run>/report``.

    Returns:
        the folder, or None: ``~report`` (no report group; so in the Optuna studies), another
        process than rank 0, several processes (DDP: the log names the ``retina.eval``
        command that writes it), or no best checkpoint (``callbacks.model_checkpoint=null``,
        or nothing saved, as with ``debug=fdr``).
    """
    if cfg.get("report") is None or rank_zero_only.rank != 0:
        return None
    saver = OmegaConf.select(cfg, "callbacks.model_checkpoint")
    ckpt = Path(saver.dirpath, f"{saver.filename}.ckpt") if saver else None
    if ckpt is None or not ckpt.is_file():
        log.info("no best checkpoint (%s): no report", ckpt)
        return None
    out = Path(cfg.paths.output_dir) / "report"
    if _multi_process():
        log.info("several processes: no report here; write it with "
                 "retina eval model=%s out=%s", ckpt, out)
        return None
    report_from_checkpoint(ckpt, out, None, cfg.trainer.accelerator, **cfg.report)
    return out
