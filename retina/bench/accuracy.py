"""NEON accuracy after the same CPU training budget: ours (RetinaNet, GFL) vs torchvision.

Each contender trains on the same data pipeline (input size, augmentation, batch size,
optimizer, schedule and weight averaging of the ``neon_retinanet`` / ``neon_gfl``
experiments) for the same wall-clock budget, once per seed, then is validated once with
pycocotools, on all validation images and per site. The number of epochs is fitted to the
budget from a short calibration of each model's step time (on a throwaway copy, the same
epochs for every seed), so every learning-rate schedule runs to its end; ``max_time``
stops a run that is slower than calibrated.

Contenders (:data:`CONTENDERS`): ``retinanet`` and ``gfl`` are ours; ``torchvision_fair``
is torchvision's RetinaNet with our RetinaNet's anchors and postprocess settings (only the
network and the losses differ); ``torchvision_default`` keeps torchvision's own anchors
and postprocess.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from pycocotools.coco import COCO

from retina.bench.reference import (
    TorchvisionTask,
    matching_anchors,
    torchvision_mobilenet_retinanet,
)
from retina.data.neon import SPLITS
from retina.training.coco_eval import run_cocoeval, summarize
from retina.training.config import compose_run
from retina.training.module import CocoDetectionTask
from retina.training.run import build

# name -> (experiment whose data, optimizer, schedule and budget it trains with, what it is)
CONTENDERS = {
    "retinanet": ("neon_retinanet", "ours: RetinaNet, 3 square anchors per location from 16 px"),
    "gfl": ("neon_gfl", "ours: GFL, 1 square anchor per location"),
    "torchvision_fair": ("neon_retinanet", "torchvision RetinaNet (MobileNetV2-FPN, GN head) "
                         "with our RetinaNet's anchors and postprocess settings"),
    "torchvision_default": ("neon_retinanet", "torchvision RetinaNet (MobileNetV2-FPN, GN head) "
                            "with its default anchors (9 per location, 32-512 px) and postprocess"),
}
TORCHVISION = ("torchvision_fair", "torchvision_default")
# The summarized numbers: the COCO stats and the per-site AP50 (see :func:`site_image_ids`)
STATS = ("mAP_50", "mAP")
OTHER_SITES = "other_sites"


def site_of(file_name: str) -> str:
    """NEON site code of a tile: its file name up to the first ``_``
    (``YELL_crop_x0000_y0400.png`` -> ``YELL``, ``OSBS_029_x0000_y0000.png`` -> ``OSBS``)."""
    return Path(file_name).name.split("_", 1)[0]


TRAINING_SITES = frozenset(site_of(scene.short) for scene in SPLITS["train"])


def site_image_ids(coco_gt: COCO, image_ids: list[int] | None = None) -> dict[str, list[int]]:
    """Image ids per site, and under ``other_sites`` those of every site training never sees.

    Args:
        coco_gt: the validation ground truth.
        image_ids: the images to split (default: all of ``coco_gt``).
    """
    ids = sorted(coco_gt.imgs) if image_ids is None else sorted(set(image_ids))
    groups: dict[str, list[int]] = {}
    for i in ids:
        groups.setdefault(site_of(coco_gt.imgs[i]["file_name"]), []).append(i)
    groups = dict(sorted(groups.items()))
    groups[OTHER_SITES] = [i for site, sids in groups.items() if site not in TRAINING_SITES
                           for i in sids]
    return groups


def site_ap50(coco_gt: COCO, results: list[dict], image_ids: list[int]) -> dict[str, float]:
    """pycocotools' AP50 of each group of :func:`site_image_ids`, each evaluated on its own
    images only (``params.imgIds``); -1 for a group without ground-truth boxes."""
    return {site: summarize(run_cocoeval(coco_gt, results, ids))[0]["mAP_50"] if ids else -1.0
            for site, ids in site_image_ids(coco_gt, image_ids).items()}


def spread(values: list[float]) -> dict:
    """Median and range of one number over seeds."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "values": list(values)}


def summarize_runs(runs: list[dict]) -> dict:
    """Per contender over its seeds: median and range of mAP_50, mAP and each site's AP50,
    and the epochs each run reached."""
    sites = runs[0]["AP50_by_site"]
    return {
        **{m: spread([r["metrics"][f"val/{m}"] for r in runs]) for m in STATS},
        "AP50_by_site": {s: spread([r["AP50_by_site"][s] for r in runs]) for s in sites},
        "epochs": [r["epochs_done"] for r in runs],
        "epochs_planned": runs[0]["epochs_planned"],
    }


def ratios(summaries: dict[str, dict]) -> dict[str, dict[str, float | None]]:
    """``"<ours>/<torchvision contender>"``: the ratios of the medians of mAP_50, mAP and the
    other sites' AP50 (None where the reference's median is not above 0)."""
    def median(summary: dict, m: str) -> float:
        return (summary["AP50_by_site"][OTHER_SITES] if m == "AP50_" + OTHER_SITES
                else summary[m])["median"]

    out = {}
    for ref in (n for n in TORCHVISION if n in summaries):
        for name in (n for n in summaries if n not in TORCHVISION):
            out[f"{name}/{ref}"] = {
                m: median(summaries[name], m) / median(summaries[ref], m)
                if median(summaries[ref], m) > 0 else None
                for m in (*STATS, "AP50_" + OTHER_SITES)
            }
    return out


def step_seconds(module: CocoDetectionTask, datamodule, steps: int = 3) -> float:
    """Median seconds of a training step (forward, losses, backward, optimizer) on one batch."""
    batch = next(iter(datamodule.train_dataloader()))
    optimizer = module.optimizer_fn([p for p in module.parameters() if p.requires_grad])
    module.train()
    times = []
    for _ in range(steps + 1):
        t = time.perf_counter()
        loss = sum(v for k, v in module.losses(batch).items() if k.startswith("loss_"))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t)
    return sorted(times[1:])[len(times[1:]) // 2]


def contender(name: str, out_dir: Path, seed: int):
    """``(cfg, datamodule, module)`` of a contender, seeded (weights, loaders)."""
    cfg = compose_run([f"experiment={CONTENDERS[name][0]}", f"seed={seed}"],
                      out_dir / f"{name}_seed{seed}")
    L.seed_everything(seed, workers=True)
    datamodule, module = build(cfg)
    if name in TORCHVISION:
        freeze = {0: 0, 1: 2, 2: 4, 3: 7, 4: 14, 5: 19}[cfg.model.detector.backbone.freeze_stages]
        if name == "torchvision_fair":
            pp = cfg.model.postprocess
            fair = {"anchor_generator": matching_anchors(module.detector.anchors),
                    "score_thresh": pp.score_thresh, "nms_thresh": pp.nms_thresh,
                    "detections_per_img": pp.max_det, "topk_candidates": pp.topk}
        else:
            fair = {}
        model = torchvision_mobilenet_retinanet(datamodule.num_classes, cfg.data.size,
                                                freeze_blocks=freeze, **fair)
        module = TorchvisionTask(
            model, instantiate(cfg.optim), instantiate(cfg.sched) if cfg.get("sched") else None,
            datamodule.cat_ids, cfg.model.no_decay_norm_bias,
        )
    return cfg, datamodule, module


def calibrate(name: str, minutes: float, out_dir: Path) -> tuple[int, float]:
    """Epochs that fit ``minutes`` from the median step time of a throwaway copy of the model
    (its optimizer steps then touch no model that is scored): ``(epochs, seconds per step)``."""
    _, datamodule, module = contender(name, out_dir, seed=0)
    step_s = step_seconds(module, datamodule)
    epochs = max(1, int(minutes * 60 / (step_s * len(datamodule.train_dataloader()))))
    print(f"[{name}] {step_s:.2f} s/step -> {epochs} epochs in {minutes} min", flush=True)
    return epochs, step_s


def run_one(name: str, minutes: float, epochs: int, seed: int, out_dir: Path) -> dict:
    """Train one contender for ``epochs`` (at most ``minutes``) and validate it once."""
    cfg, datamodule, module = contender(name, out_dir, seed)
    ema = cfg.get("callbacks", {}).get("ema")
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_epochs=epochs,
        max_time={"seconds": int(minutes * 60)}, check_val_every_n_epoch=epochs + 1,
        logger=False, enable_checkpointing=False, enable_model_summary=False,
        num_sanity_val_steps=0, gradient_clip_val=cfg.trainer.gradient_clip_val,
        callbacks=[instantiate(ema)] if ema else [],
    )
    t = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    train_s = time.perf_counter() - t
    trainer.validate(module, datamodule=datamodule, verbose=False)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    by_site = site_ap50(module.coco_gt(), module.last_results, module.last_image_ids)
    # from the steps: a max_time stop inside an epoch still counts that epoch in current_epoch
    steps_per_epoch = len(datamodule.train_dataloader())
    done = round(trainer.global_step / steps_per_epoch, 2)
    print(f"[{name} seed {seed}] mAP_50 {metrics['val/mAP_50']:.3f}, epochs {done}/{epochs}",
          flush=True)
    return {"seed": seed, "metrics": metrics, "AP50_by_site": by_site,
            "epochs_planned": epochs, "epochs_done": done, "steps_done": trainer.global_step,
            "steps_planned": epochs * steps_per_epoch, "train_seconds": train_s}


def accuracy(minutes: float, models: list[str], seeds: list[int]) -> dict:
    """Train and score every contender of ``models`` for every seed; the report (see
    ``docs/benchmarks-accuracy.md``)."""
    unknown = [m for m in models if m not in CONTENDERS]
    if unknown:
        raise ValueError(f"unknown contender(s) {unknown}; choose from {', '.join(CONTENDERS)}")
    out_dir = Path(tempfile.mkdtemp(prefix="retina-bench-accuracy-"))
    report = {"minutes": minutes, "seeds": list(seeds), "training_sites": sorted(TRAINING_SITES),
              "results": {}}
    for name in models:
        epochs, step_s = calibrate(name, minutes, out_dir / "calibration")
        runs = [run_one(name, minutes, epochs, seed, out_dir) for seed in seeds]
        report["results"][name] = {
            "experiment": CONTENDERS[name][0], "recipe": CONTENDERS[name][1],
            "step_seconds": step_s, "summary": summarize_runs(runs), "runs": runs,
        }
    report["ratios"] = ratios({n: r["summary"] for n, r in report["results"].items()})
    print_accuracy(report)
    return report


def print_accuracy(report: dict) -> None:
    """The report as a table: medians with [min-max] over the seeds."""
    def cell(s: dict) -> str:
        return f"{s['median']:.3f} [{s['min']:.3f}-{s['max']:.3f}]"

    res = report["results"]
    sites = list(next(iter(res.values()))["summary"]["AP50_by_site"]) if res else []
    print(f"\nNEON validation after {report['minutes']} min of training per run, seeds "
          f"{report['seeds']}: median [min-max]; AP50 per site (training saw "
          f"{', '.join(report['training_sites'])})")
    print(f"{'model':<20}{'mAP_50':>22}{'mAP':>22}" + "".join(f"{'AP50 ' + s:>22}" for s in sites)
          + "  epochs")
    for name, r in res.items():
        s = r["summary"]
        epochs = ",".join(map(str, s["epochs"])) + f" of {s['epochs_planned']}"
        print(f"{name:<20}{cell(s['mAP_50']):>22}{cell(s['mAP']):>22}"
              + "".join(f"{cell(s['AP50_by_site'][site]):>22}" for site in sites) + f"  {epochs}")
    for pair, values in report["ratios"].items():
        print(f"{pair}: " + ", ".join(f"{m} {v:.2f}x" if v is not None else f"{m} -"
                                      for m, v in values.items()))
