"""NEON accuracy after the same CPU training budget: ours (RetinaNet, GFL) vs torchvision.

Each contender trains on the same data pipeline (input size, augmentation, batch size,
optimizer and schedule of the ``neon_retinanet`` / ``neon_gfl`` experiments) for the
same wall-clock budget, then is validated once with pycocotools. The number of epochs
is fitted to the budget from a short calibration of each model's step time, so every
learning-rate schedule runs to its end; ``max_time`` stops a run that is slower than
calibrated.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import lightning as L
from hydra.utils import instantiate

from retina.bench.reference import TorchvisionTask, torchvision_mobilenet_retinanet
from retina.training.config import compose_run
from retina.training.module import CocoDetectionTask
from retina.training.run import build

EXPERIMENTS = {"retinanet": "neon_retinanet", "gfl": "neon_gfl", "torchvision": "neon_retinanet"}


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
    cfg = compose_run([f"experiment={EXPERIMENTS[name]}", f"seed={seed}"], out_dir / name)
    L.seed_everything(seed, workers=True)
    datamodule, module = build(cfg)
    if name == "torchvision":
        freeze = {0: 0, 1: 2, 2: 4, 3: 7, 4: 14, 5: 19}[cfg.model.detector.backbone.freeze_stages]
        model = torchvision_mobilenet_retinanet(datamodule.num_classes, cfg.data.size, freeze_blocks=freeze)
        module = TorchvisionTask(
            model, instantiate(cfg.optim), instantiate(cfg.sched) if cfg.get("sched") else None,
            datamodule.cat_ids, cfg.model.no_decay_norm_bias,
        )
    return cfg, datamodule, module


def run_one(name: str, minutes: float, seed: int, out_dir: Path) -> dict:
    cfg, datamodule, module = contender(name, out_dir, seed)
    step_s = step_seconds(module, datamodule)
    steps_per_epoch = len(datamodule.train_dataloader())
    epochs = max(1, int(minutes * 60 / (step_s * steps_per_epoch)))
    print(f"[{name}] {step_s:.2f} s/step -> {epochs} epochs in {minutes} min", flush=True)
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_epochs=epochs,
        max_time={"seconds": int(minutes * 60)}, check_val_every_n_epoch=epochs + 1,
        logger=False, enable_checkpointing=False, enable_model_summary=False,
        num_sanity_val_steps=0, gradient_clip_val=cfg.trainer.gradient_clip_val,
    )
    t = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    train_s = time.perf_counter() - t
    trainer.validate(module, datamodule=datamodule, verbose=False)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    return {"metrics": metrics, "epochs_planned": epochs, "epochs_done": trainer.current_epoch,
            "train_seconds": train_s, "step_seconds": step_s, "experiment": EXPERIMENTS[name]}


def accuracy(minutes: float, models: list[str], seed: int) -> dict:
    out_dir = Path(tempfile.mkdtemp(prefix="retina-bench-accuracy-"))
    report = {"minutes": minutes, "seed": seed, "results": {}}
    for name in models:
        report["results"][name] = run_one(name, minutes, seed, out_dir)
    res = report["results"]
    if "torchvision" in res:
        ref = res["torchvision"]["metrics"]
        report["ratios"] = {
            f"{n}_{m}": res[n]["metrics"][f"val/{m}"] / max(ref[f"val/{m}"], 1e-9)
            for n in res if n != "torchvision" for m in ("mAP", "mAP_50")
        }
    print(f"\nNEON validation after {minutes} min of training, seed {seed}")
    print(f"{'model':<14}{'mAP':>8}{'mAP_50':>8}{'mAP_75':>8}{'AR_100':>8}{'epochs':>8}{'train s':>9}")
    for n, r in res.items():
        m = r["metrics"]
        print(f"{n:<14}{m['val/mAP']:>8.3f}{m['val/mAP_50']:>8.3f}{m['val/mAP_75']:>8.3f}"
              f"{m['val/AR_100']:>8.3f}{r['epochs_done']:>8}{r['train_seconds']:>9.0f}")
    return report
