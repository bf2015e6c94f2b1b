"""Figures for the notebooks: images with boxes, loss curves, per-side box distributions.

Plain matplotlib on ``Axes`` the caller owns (or a new figure); nothing is shown or saved
here. Images are (3, H, W) tensors, uint8 or float in [0, 1]; boxes (n, 4) x1y1x2y2 pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import Tensor

SIDES = ("left", "top", "right", "bottom")  # order of the GFL box distributions


def to_hwc(image: Tensor) -> np.ndarray:
    """(3, H, W) uint8 or float in [0, 1] -> (H, W, 3) array for ``imshow``."""
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) image, got shape {tuple(image.shape)}")
    image = image.detach().cpu()
    if image.dtype != torch.uint8:
        image = (image.float().clamp(0, 1) * 255).round().to(torch.uint8)
    return image.permute(1, 2, 0).numpy()  # (H, W, 3)


def draw_boxes(
    ax: Axes,
    boxes: Tensor,
    color: str = "yellow",
    texts: Sequence[str] | None = None,
    linewidth: float = 1.5,
) -> list[Rectangle]:
    """Outline ``boxes`` (n, 4) x1y1x2y2 on ``ax``, with an optional text at each corner.

    Returns:
        the n rectangles added, in box order.
    """
    boxes = torch.as_tensor(boxes).detach().cpu().float().reshape(-1, 4)
    if texts is not None and len(texts) != len(boxes):
        raise ValueError(f"{len(texts)} texts for {len(boxes)} boxes")
    patches = []
    for i, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        rect = Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=color,
                         linewidth=linewidth)
        ax.add_patch(rect)
        patches.append(rect)
        if texts is not None:
            ax.text(x1, y1, texts[i], color="black", fontsize=6, va="bottom",
                    bbox={"facecolor": color, "alpha": 0.7, "pad": 0.5, "linewidth": 0})
    return patches


def show_boxes(
    ax: Axes,
    image: Tensor,
    boxes: Tensor,
    color: str = "yellow",
    texts: Sequence[str] | None = None,
    title: str | None = None,
) -> list[Rectangle]:
    """The image with its boxes on ``ax`` (axes off); returns the rectangles."""
    ax.imshow(to_hwc(image))
    patches = draw_boxes(ax, boxes, color, texts)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    return patches


def compare_figure(
    images: Sequence[Tensor],
    gt_boxes: Sequence[Tensor],
    detections: Sequence[dict[str, Tensor]],
    score_thresh: float = 0.3,
    size: float = 3.5,
) -> Figure:
    """Ground truth (top row, green) over predictions scoring >= ``score_thresh`` (bottom row,
    yellow, with scores) for each image.

    Args:
        images: per image (3, H, W).
        gt_boxes: per image (n, 4) x1y1x2y2 in the image's pixels.
        detections: per image ``boxes`` (D, 4) and ``scores`` (D,) in the same pixels.
        score_thresh: lowest score drawn.
        size: inches per panel.
    """
    if not len(images) == len(gt_boxes) == len(detections):
        raise ValueError(f"{len(images)} images, {len(gt_boxes)} ground truths and "
                         f"{len(detections)} detection lists")
    n = len(images)
    fig, axes = plt.subplots(2, n, figsize=(size * n, size * 2), squeeze=False)
    for i, (image, gt, det) in enumerate(zip(images, gt_boxes, detections)):
        show_boxes(axes[0, i], image, gt, "lime", title=f"ground truth: {len(gt)}")
        keep = det["scores"] >= score_thresh
        texts = [f"{s:.2f}" for s in det["scores"][keep].tolist()]
        show_boxes(axes[1, i], image, det["boxes"][keep], "yellow", texts,
                   title=f"predicted (score >= {score_thresh}): {int(keep.sum())}")
    fig.tight_layout()
    return fig


def plot_curves(
    x: Tensor,
    curves: dict[str, Tensor],
    xlabel: str,
    ylabel: str,
    ax: Axes | None = None,
    ylim: tuple[float, float] | None = None,
) -> Axes:
    """One line per ``curves`` entry (its key is the legend label) over ``x``."""
    if ax is None:
        ax = plt.subplots(figsize=(5, 3.5))[1]
    for label, y in curves.items():
        ax.plot(x.detach().cpu().numpy(), y.detach().cpu().numpy(), label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return ax


def plot_side_distributions(
    probs: Tensor,
    px_per_bin: Tensor | float,
    axes: Sequence[Axes] | None = None,
    title: str | None = None,
) -> list[Axes]:
    """Bar charts of one box's four side distributions, with their means (red).

    Args:
        probs: (4, R+1) probabilities of the left, top, right, bottom distances over the
            bins 0..R (in strides).
        px_per_bin: pixels per bin, one for all sides or (4,) per side, to label the x axes
            in pixels.
        axes: four axes to draw on (a new 1x4 figure if None).
        title: the y label of the first axes.

    Returns:
        the four axes.
    """
    probs = probs.detach().cpu().float()
    if probs.ndim != 2 or probs.shape[0] != 4:
        raise ValueError(f"expected (4, R+1) side probabilities, got {tuple(probs.shape)}")
    px = torch.as_tensor(px_per_bin, dtype=torch.float32).cpu().expand(4)  # (4,)
    if axes is None:
        axes = plt.subplots(1, 4, figsize=(10, 2.2), sharey=True)[1]
    for ax, side, p, step in zip(axes, SIDES, probs, px.tolist()):
        bins = torch.arange(probs.shape[1]) * step  # (R+1,) pixels
        mean = float((p * bins).sum())
        ax.bar(bins.numpy(), p.numpy(), width=0.8 * step, color="tab:blue")
        ax.axvline(mean, color="tab:red", linewidth=1)
        ax.set_title(f"{side}: {mean:.0f} px", fontsize=8)
        ax.set_xlabel("distance (px)", fontsize=7)
        ax.tick_params(labelsize=6)
    if title:
        axes[0].set_ylabel(title, fontsize=8)
    return list(axes)


def crop_around(image: Tensor, box: Tensor, margin: float = 0.5) -> tuple[Tensor, Tensor]:
    """The part of ``image`` (3, H, W) around ``box`` (4,) x1y1x2y2, grown by ``margin`` of
    its size on each side, and the box in the crop's pixels."""
    h, w = image.shape[-2:]
    x1, y1, x2, y2 = box.tolist()
    mx, my = margin * (x2 - x1), margin * (y2 - y1)
    left, top = max(0, int(x1 - mx)), max(0, int(y1 - my))
    right, bottom = min(w, int(x2 + mx) + 1), min(h, int(y2 + my) + 1)
    shift = torch.tensor([left, top, left, top], dtype=torch.float32)
    return image[:, top:bottom, left:right], box.float().cpu() - shift


def box_with_distributions(
    image: Tensor, box: Tensor, probs: Tensor, px_per_bin: Tensor | float, title: str = "",
    gt_boxes: Tensor | None = None,
) -> Figure:
    """One detection: a crop around its box (yellow; ground truth in green) and its four
    side distributions (:func:`plot_side_distributions`)."""
    fig, axes = plt.subplots(1, 5, figsize=(12, 2.4),
                             gridspec_kw={"width_ratios": [1.2, 1, 1, 1, 1]})
    crop, local = crop_around(image, box)
    axes[0].imshow(to_hwc(crop))
    if gt_boxes is not None and len(gt_boxes):
        shift = local - box.float().cpu()  # (4,) the crop's offset, negated
        draw_boxes(axes[0], gt_boxes.float().cpu() + shift, "lime", linewidth=1)
    draw_boxes(axes[0], local[None], "yellow")
    axes[0].set_axis_off()
    axes[0].set_title(title, fontsize=8)
    plot_side_distributions(probs, px_per_bin, axes[1:])
    fig.tight_layout()
    return fig


def review_grid(
    images: Sequence[Tensor],
    gt_boxes: Sequence[Tensor],
    boxes: Sequence[Tensor],
    titles: Sequence[str],
    columns: int = 3,
    size: float = 3.5,
) -> Figure:
    """One panel per detection to review: its image, ground truth (green) and the box (red).

    Args:
        images: per panel (3, H, W).
        gt_boxes: per panel (n, 4) ground truth of that image.
        boxes: per panel (4,) the detection.
        titles: per panel.
    """
    n = len(images)
    rows = max(1, -(-n // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(size * columns, size * rows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.set_axis_off()
    for ax, image, gt, box, title in zip(axes.ravel(), images, gt_boxes, boxes, titles):
        show_boxes(ax, image, gt, "lime", title=title)
        draw_boxes(ax, box.reshape(1, 4), "red", linewidth=2)
    fig.tight_layout()
    return fig
