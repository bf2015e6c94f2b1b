"""Plots people look at instead of reading logs."""

from __future__ import annotations

import csv
from pathlib import Path

from matplotlib.figure import Figure  # off-screen: no pyplot, no global backend


def read_metrics_csv(path: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Lightning CSVLogger ``metrics.csv`` -> {metric: [(step, value), ...]}."""
    series: dict[str, list[tuple[int, float]]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            step = int(row["step"])
            for key, value in row.items():
                if key not in ("step", "epoch") and value not in ("", None):
                    series.setdefault(key, []).append((step, float(value)))
    return series


def plot_training(csv_path: str | Path, out: str | Path) -> Path:
    """Training loss and validation mAP / mAP_50 against the step, in one figure."""
    series = read_metrics_csv(csv_path)
    fig = Figure(figsize=(10, 3.6))
    ax_loss, ax_map = fig.subplots(1, 2)
    for key in ("train/loss", "train/loss_cls", "train/loss_box", "train/loss_dfl"):
        if key in series:
            steps, values = zip(*series[key])
            ax_loss.plot(steps, values, label=key.split("/")[1], lw=1)
    ax_loss.set(xlabel="step", ylabel="loss", title="training loss")
    ax_loss.legend(frameon=False)
    for key in ("val/mAP", "val/mAP_50", "val/AR_100"):
        if key in series:
            steps, values = zip(*series[key])
            ax_map.plot(steps, values, marker="o", label=key.split("/")[1])
    ax_map.set(xlabel="step", ylabel="COCO metric", title="validation (pycocotools)", ylim=(0, None))
    ax_map.legend(frameon=False)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=110)
    return out
