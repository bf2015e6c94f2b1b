"""Box maths shared by training, prediction and export: box coders, the per-level layout,
and the one postprocess (threshold, top-k, decode, class-wise NMS). Pure tensor code;
imports nothing else of the package."""

from retina.ops.boxes import DeltaCoder, DistanceCoder, paired_iou
from retina.ops.levels import flatten_levels, foreground_logits, scale_to_original
from retina.ops.postprocess import Postprocess, clip_boxes, nms_rank

__all__ = ["DeltaCoder", "DistanceCoder", "Postprocess", "clip_boxes", "flatten_levels",
           "foreground_logits", "nms_rank", "paired_iou", "scale_to_original"]
