"""Sliced prediction: a scene larger than the network input, window by window at its own scale.

The scene is covered by overlapping ``tile`` x ``tile`` windows (``retina.data.tile.windows``,
the last row and column shifted in to end at the border). Each window goes through the
predictor like any image, ``batch_size`` windows at a time, so every format of
``retina.load`` works; it is resized to the model input like any image (``tile`` equal to
the input side: no resize). Boxes are shifted to scene pixels and merged across windows by
``retina.ops.window_merge.merge_windows``: seams first (an object cut by a window border is kept
once and whole), then class-wise NMS (or score-weighted fusion) of duplicates in overlaps.

With ``full_pass`` the whole scene, resized to the network input (``Scene.overview``: a
decimated read with rasterio), is predicted too and its boxes, mapped to scene pixels, are
merged with the windows' by the same NMS (or fusion): an object larger than a window is
then seen whole once (SAHI's "standard prediction" beside the slices).

Memory: windows are read one batch at a time (``retina.data.scene``); with rasterio a
GeoTIFF is never in memory whole, and no scene is ever converted to float.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from retina.data.scene import Scene, open_scene
from retina.data.tile import windows
from retina.ops.window_merge import MERGES, merge_sets, merge_windows

Detections = list[dict[str, Tensor]]
# fraction of the tile within which a box touching an inner window edge counts as cut
MARGIN = 0.02


def overview_size(meta, width: int, height: int) -> tuple[int, int]:
    """(h, w) a whole scene of ``width`` x ``height`` is read at for a full pass: the
    network input of a fixed-size model, else the eval resize's ``min_size`` / ``max_size``
    rule (aspect kept)."""
    side = meta.size or (min(meta.graph_input_size) if meta.graph_input_size else None)
    if side:
        h, w = meta.graph_input_size or (side, side)
        return int(h), int(w)
    scale = min(meta.min_size / min(width, height), (meta.max_size or 10**9) / max(width, height))
    return max(1, round(height * scale)), max(1, round(width * scale))


def native_side(meta) -> int:
    """The side of the square network input of an export's metadata (fixed size, short
    side, or the graph's input)."""
    side = meta.size or meta.min_size or (min(meta.graph_input_size)
                                          if meta.graph_input_size else None)
    if not side:
        raise ValueError("the model has no fixed input size: give tile=PIXELS")
    return int(side)


@torch.inference_mode()
def predict_scene(
    predict: Callable[[list[Tensor]], Detections], scene: Scene, tile: int,
    overlap: float = 0.25, batch_size: int = 4, iou_thresh: float = 0.5,
    margin: float | None = None, merge: str = "nms", progress: bool = False,
    full_pass: tuple[int, int] | None = None,
) -> dict[str, Tensor]:
    """Detections of a whole scene from its windows (and a full pass).

    Args:
        predict: a predictor: uint8 (3, h, w) images -> per image ``boxes`` (in its pixels),
            ``scores``, ``labels`` (and any other per-box fields).
        scene: see ``retina.data.scene``.
        tile: window side in scene pixels.
        overlap: fraction of ``tile`` shared by neighbouring windows.
        batch_size: windows per predictor call.
        iou_thresh: IoU of the merge's class-wise NMS and seam matching.
        margin: pixels; a box this close to an inner window edge is cut (default:
            :data:`MARGIN` of ``tile``).
        merge: ``"nms"`` or ``"fusion"`` (see ``retina.ops.window_merge.merge_windows``).
        progress: show a tqdm bar over the windows.
        full_pass: (h, w): also predict the whole scene read at that size, and merge its
            boxes with the windows' (``merge`` at ``iou_thresh``).

    Returns:
        ``boxes`` (D, 4) x1y1x2y2 in scene pixels, ``scores`` (D,), ``labels`` (D,) and the
        predictor's other fields, sorted by decreasing score.
    """
    if merge not in MERGES:  # before any window is predicted
        raise ValueError(f"merge={merge!r}: expected one of {MERGES}")
    wins = windows(scene.width, scene.height, tile, overlap)
    margin = MARGIN * tile if margin is None else margin
    parts, window_of = [], []
    bar = tqdm(total=len(wins), unit="window", disable=not progress,
               desc=Path(scene.name).name, leave=False)
    for start in range(0, len(wins), batch_size):
        batch = wins[start:start + batch_size]
        images = []
        for x0, y0, x1, y1 in batch:  # a scene smaller than a tile: pad, keep the scale
            image = scene.read((x0, y0, x1, y1))
            images.append(F.pad(image, (0, tile - (x1 - x0), 0, tile - (y1 - y0))))
        for k, det in enumerate(predict(images)):
            x0, y0, x1, y1 = batch[k]
            det = {n: v.cpu() for n, v in det.items()}
            boxes = det["boxes"].clamp(min=0).minimum(
                torch.tensor([x1 - x0, y1 - y0] * 2, dtype=det["boxes"].dtype))  # off the pad
            det["boxes"] = boxes + torch.tensor([x0, y0, x0, y0], dtype=boxes.dtype)
            parts.append(det)
            window_of.append(torch.full((len(boxes),), start + k, dtype=torch.long))
        bar.update(len(batch))
    bar.close()
    dets = {n: torch.cat([p[n] for p in parts]) for n in parts[0]}
    merged = merge_windows(dets, torch.cat(window_of), torch.tensor(wins, dtype=torch.float32),
                           (scene.width, scene.height), iou_thresh, margin, merge)
    if full_pass is None:
        return merged
    whole = {n: v.cpu() for n, v in predict([scene.overview(*full_pass)])[0].items()}
    return merge_sets([merged, scaled(whole, scene.width / full_pass[1],
                                      scene.height / full_pass[0])], iou_thresh, merge)


def scaled(det: dict[str, Tensor], sx: float, sy: float) -> dict[str, Tensor]:
    """Detections with x scaled by ``sx`` and y by ``sy`` (boxes, and a per-side spread)."""
    factor = torch.tensor([sx, sy, sx, sy])
    return {n: v * factor.to(v) if n in ("boxes", "spread") else v for n, v in det.items()}


class SlicedPrediction:
    """What every predictor shares: ``predict_large``, and the classes of its ``meta`` (an
    ``ExportMeta``; the predictor is a ``__call__`` on images)."""

    @property
    def class_names(self) -> list[str]:
        return self.meta.class_names

    @property
    def cat_ids(self) -> list[int]:
        return self.meta.cat_ids

    def predict_large(
        self, scene: str | Path | Tensor | Scene, tile: int | None = None,
        overlap: float = 0.25, batch_size: int = 4, merge: str = "nms",
        iou_thresh: float | None = None, margin: float | None = None, progress: bool = False,
        full_pass: bool = False,
    ) -> dict[str, Tensor]:
        """Detections of a scene larger than the network input, predicted window by window.

        Args:
            scene: an image or GeoTIFF file, a (3, H, W) uint8 tensor, or an open
                ``retina.data.scene.Scene``.
            tile: window side in scene pixels (default: the network input side, so
                windows are not resized; a model trained on 400-px tiles resized to 448
                sees its training scale at ``tile=400``).
            overlap: fraction of the window shared with each neighbour; objects smaller
                than ``tile * overlap`` are always seen whole by some window.
            batch_size: windows per network call.
            merge: ``"nms"`` or ``"fusion"`` (score-weighted box fusion).
            iou_thresh: of the merge (default: the model's NMS threshold).
            margin: see :func:`predict_scene`.
            progress: show a tqdm progress bar.
            full_pass: also predict the whole scene resized to the network input
                (:func:`overview_size`) and merge its boxes with the windows'.

        Returns:
            one image's detections in scene pixels (see ``Predictor.__call__``).
        """
        opened = not isinstance(scene, Scene)
        scene = open_scene(scene) if opened else scene
        try:
            return predict_scene(
                self, scene, tile or native_side(self.meta), overlap, batch_size,
                self.meta.model["postprocess"]["nms_thresh"] if iou_thresh is None else iou_thresh,
                margin, merge, progress,
                overview_size(self.meta, scene.width, scene.height) if full_pass else None)
        finally:
            if opened:
                scene.close()
