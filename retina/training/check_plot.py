"""``check.png`` of ``retina check``: the boxes against the anchors, on one page."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # off-screen: no pyplot, no global backend

from retina.training.check import IOU_EDGES, WARN_BELOW, Ceiling, side_range

REACHED, MISSED = "#4c72b0", "#dd8452"


def _bars(ax, labels: list[str], values: list[float], counts: list[int], title: str,
          base: float | None = None) -> None:
    y = np.arange(len(labels))
    ax.barh(y, values, color=[REACHED if v >= WARN_BELOW else MISSED for v in values])
    ax.set_yticks(y, labels, fontsize=9)
    ax.invert_yaxis()
    for yi, v, n in zip(y, values, counts):
        ax.text(min(v, 1.0) + 0.01, yi, f"{v:.2f}" + (f"  ({n})" if n is not None else ""),
                va="center", fontsize=8)
    ax.axvline(WARN_BELOW, color="grey", ls=":", lw=1)
    if base is not None:
        ax.axvline(base, color="black", lw=1)
    ax.set(xlim=(0, 1.25), title=title, xlabel="recall ceiling")


def plot_check(report: dict, ceilings: dict[str, Ceiling], out: str | Path) -> Path:
    """Six panels: box sides at the input against the anchor sides per level, each box's best
    anchor IoU, the ceiling per size, per class and per suggestion, and the counts."""
    train = ceilings["train"]
    fig = Figure(figsize=(16, 9.5))
    fig.suptitle(f"retina check: recall ceiling {train.value:.3f} of the training boxes "
                 f"({report['assigner'].split(':')[0]}, input {report['input']['geometry']})",
                 fontsize=13)
    axes = fig.subplots(2, 3).ravel()

    ax = axes[0]  # box sides against anchor sides
    sides = train.side[~train.vanished]
    lo = max(1.0, float(sides.min()) / 1.5) if len(sides) else 1.0
    anchor_sides = [s for a in report["anchors"] for s in a["sides_px"]]
    hi = max([float(sides.max()) * 1.5 if len(sides) else 2.0, *anchor_sides]) * 1.2
    edges = np.geomspace(lo, hi, 40)
    reached = train.positive[~train.vanished]
    ax.hist([sides[reached], sides[~reached]], bins=edges, stacked=True,
            color=[REACHED, MISSED], label=["positive by the rule", "never positive"])
    ax.set_xscale("log")
    for level in report["anchors"]:
        for k, side in enumerate(level["sides_px"]):
            ax.axvline(side, color="black", lw=1.2 if k == 0 else 0.6, ls="-" if k == 0 else "--")
        ax.text(level["sides_px"][0], 1.0, level["level"], transform=ax.get_xaxis_transform(),
                ha="center", va="bottom", fontsize=9)
    ax.set(xlabel="box side sqrt(w h) at the input, px (lines: the anchors' sides)",
           ylabel="training boxes")
    ax.set_title("box sizes and anchor sizes", pad=16)
    ax.legend(loc="upper right", fontsize=9, framealpha=1)

    ax = axes[1]  # best IoU
    ious = train.best_iou[~train.vanished]
    ax.hist([ious[reached], ious[~reached]], bins=IOU_EDGES, stacked=True,
            color=[REACHED, MISSED])
    assigner = report["assigner"]
    if ">= " in assigner and "mean" not in assigner:
        ax.axvline(float(assigner.rsplit(">= ", 1)[1]), color="black", ls=":", lw=1)
    ax.set(xlabel="best anchor IoU of each box", ylabel="training boxes", xlim=(0, 1),
           title="each box's best anchor")

    ax = axes[2]  # per size
    per_size = report["splits"]["train"]["ceiling"]["per_size"]
    _bars(ax, [side_range(*s["side_px"]) for s in per_size],
          [s["ceiling"] for s in per_size], [s["boxes"] for s in per_size],
          "by box side at the input (boxes)")

    ax = axes[3]  # per class, the lowest first
    per_class = sorted(report["splits"]["train"]["ceiling"]["per_class"].items(),
                       key=lambda kv: kv[1]["ceiling"])[:15]
    _bars(ax, [k for k, _ in per_class], [v["ceiling"] for _, v in per_class],
          [v["boxes"] for _, v in per_class], "by class (the 15 lowest; boxes)")

    ax = axes[4]  # suggestions
    sugg = report["suggestions"][:6]
    labels = ["as configured", *[s["what"] for s in sugg]]
    _bars(ax, [t if len(t) < 40 else t[:38] + "..." for t in labels],
          [train.value, *[s["ceiling"] for s in sugg]], [None] * len(labels),
          "suggestions (check.json has the options)", base=train.value)

    ax = axes[5]  # counts
    ax.axis("off")
    rows = []
    for name, split in report["splits"].items():
        c = split["ceiling"]
        rows += [f"{name}: {split['images']} images, {split['annotations']} annotations",
                 f"  without boxes {split['without_boxes']}, crowd {split['crowd']}",
                 f"  degenerate {split['degenerate']}, outside {split['outside']}",
                 f"  ceiling {c['ceiling']:.3f} ({c['positive']}/{c['boxes']} boxes)",
                 f"  box side median {c['box_side_px']['median']} px",
                 f"    ({c['box_side_px']['min']}-{c['box_side_px']['max']} px)"]
    if "duplicates" in report:
        rows.append(f"duplicate files: {len(report['duplicates'])} groups")
    rows += ["", "anchors (side px):"]
    rows += [f"  {a['level']} stride {a['stride']}: "
             + ", ".join(f"{s:g}" for s in a["sides_px"]) for a in report["anchors"]]
    ax.text(0, 1, "\n".join(rows), va="top", family="monospace", fontsize=9,
            transform=ax.transAxes)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=100)
    return out
