"""Test-time flip: each image and its horizontal flip through the same predictor, the flip's
boxes mapped back and both sets merged like duplicates across windows.

``FlipTTA(predictor)`` keeps the predictor's contract (uint8 images in, detections in their
pixels out) and its ``predict_large`` (every window flipped too), so it works with every
runtime. The two sets are merged by class-wise NMS at the model's NMS threshold (or
score-weighted fusion), at most the model's ``max_det`` per image: an object both views
find is one box; one that only one view finds is kept. It costs twice the network time.
"""

from __future__ import annotations

import torch
from torch import Tensor

from retina.infer.predictor import Detections, Images, image_list
from retina.infer.sliced import SlicedPrediction
from retina.ops.window_merge import MERGES, merge_sets


def unflip(det: dict[str, Tensor], width: int) -> dict[str, Tensor]:
    """Detections of a horizontally flipped image of ``width`` pixels in the unflipped
    image's pixels: x1' = W - x2, x2' = W - x1; a ``spread`` (left, top, right, bottom)
    swaps left and right."""
    out = dict(det)
    x1, y1, x2, y2 = det["boxes"].unbind(-1)  # (D,) each
    out["boxes"] = torch.stack([width - x2, y1, width - x1, y2], dim=-1)  # (D, 4)
    if "spread" in det:
        left, top, right, bottom = det["spread"].unbind(-1)
        out["spread"] = torch.stack([right, top, left, bottom], dim=-1)
    return out


class FlipTTA(SlicedPrediction):
    """``predictor`` with test-time horizontal flip (module docstring).

    Args:
        predictor: any predictor of ``retina.load``.
        merge: ``"nms"`` or ``"fusion"``.
    """

    def __init__(self, predictor, merge: str = "nms") -> None:
        if merge not in MERGES:
            raise ValueError(f"merge={merge!r}: expected one of {MERGES}")
        self.predictor = predictor
        self.merge = merge

    @property
    def meta(self):
        return self.predictor.meta

    def set_postprocess(self, **settings: float | None) -> FlipTTA:
        self.predictor.set_postprocess(**settings)
        return self

    def __call__(self, images: Images) -> Detections:
        """Same contract as :meth:`retina.infer.predictor.Predictor.__call__`."""
        images = image_list(images)
        both = self.predictor(images + [im.flip(-1) for im in images])  # one call, 2B images
        post = self.meta.model["postprocess"]
        out = []
        for i, im in enumerate(images):
            flipped = unflip(both[len(images) + i], im.shape[-1])
            out.append(merge_sets([both[i], flipped], post["nms_thresh"], self.merge,
                                  post["max_det"]))
        return out
