"""The one inference path: network -> postprocess -> detections in the image's own pixels.

Validation (``DetectionModule.predict_batch``), the eager Predictor (``retina.infer``), sliced
prediction (through the Predictor) and the exported TorchScript / ONNX graphs (traced, with
``padded=True``) all run :func:`detect`. Its input is the preprocessed batch: the eval resize
and padding of ``retina.data`` (the evaluation loader, or ``retina.data.collate.preprocess``
for bare images), or its traceable form inside the graph (``retina.export.graph``).
"""

from __future__ import annotations

from typing import Protocol

from torch import Tensor, nn

from retina.ops.levels import foreground_logits, scale_to_original
from retina.ops.postprocess import Postprocess

Detections = list[dict[str, Tensor]]


class Network(Protocol):
    """What :func:`detect` needs of the network (``retina.model.detector.Detector``)."""

    head: nn.Module  # with ``num_classes`` and ``background_class`` (a softmax K+1st channel)

    def __call__(self, images: Tensor, image_sizes: Tensor | None) -> tuple[list[Tensor],
                                                                           list[Tensor]]: ...

    def level_anchors(self, maps: list[Tensor]) -> list[Tensor]: ...


def class_logits(network: Network, cls_maps: list[Tensor]) -> list[Tensor]:
    """Per-class logits whose sigmoid is each class's score: the maps themselves, or, for a
    head with a softmax background channel, each class's softmax probability as a logit."""
    if network.head.background_class:
        return foreground_logits(cls_maps, network.head.num_classes)
    return cls_maps


def detect(
    network: Network, postprocess: Postprocess, images: Tensor, image_sizes: Tensor,
    orig_sizes: Tensor, anchors: list[Tensor] | None = None, padded: bool = False,
) -> Detections | tuple[Tensor, ...]:
    """Detections of a preprocessed batch, in the pixels of the original images.

    Args:
        network: the detector (images -> per-level maps, and its anchors).
        postprocess: thresholds, decoder and NMS.
        images: (B, 3, H, W) float in [0, 1], resized and zero-padded.
        image_sizes: (B, 2) or (1, 2) (h, w) of the resized images before padding.
        orig_sizes: (B, 2) or (1, 2) (H, W) of the original images.
        anchors: per level (H_l W_l A, 4); None: the network's for these maps.
        padded: fixed-size outputs with no data-dependent Python (for tracing).

    Returns:
        per image ``boxes`` (D, 4) x1y1x2y2, ``scores`` (D,), ``labels`` (D,) in 0..K-1 sorted
        by score (and ``spread`` (D, 4) for a coder with one); with ``padded``: ``boxes``
        (B, D, 4), ``scores`` (B, D), ``labels`` (B, D) (-1 in padding rows), ``num_dets``
        (B,) and, for such a coder, ``spread`` (B, D, 4), D = ``postprocess.max_det``.
    """
    cls_maps, box_maps = network(images, image_sizes)
    cls_maps = class_logits(network, cls_maps)
    anchors = network.level_anchors(cls_maps) if anchors is None else anchors
    if not padded:
        dets = postprocess(cls_maps, box_maps, anchors, image_sizes)
        return scale_to_original(dets, image_sizes, orig_sizes)
    boxes, scores, labels, num_dets, extra = postprocess.padded(
        cls_maps, box_maps, anchors, image_sizes)  # (B, D, 4), (B, D), (B, D), (B,)
    ratio = (orig_sizes.float() / image_sizes.float()).flip(1).repeat(1, 2)[:, None]  # w h w h
    outputs = (boxes * ratio, scores, labels, num_dets)
    if "spread" in extra:  # left/top/right/bottom scale by w h w h too
        outputs += (extra["spread"] * ratio,)
    return outputs
