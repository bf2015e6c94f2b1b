"""torchvision's RetinaNet (v1 ``retinanet_resnet50_fpn``, v2 ``retinanet_resnet50_fpn_v2``)
to and from retina's Detector.

What makes the converted model compute torchvision's detections (the experiment configs
``retinanet_r50_coco_tv`` and ``retinanet_r50_v2_coco_tv`` set it, see ``conf/experiment``):

- the same network: ResNet-50 (BN epsilon 0 for v1's COCO weights, which torchvision loads
  with ``overwrite_eps(model, 0.0)``; 1e-5 otherwise), FPN with P6 from P5 (v1,
  ``LastLevelP6P7(256, 256)``) or from C5 (v2), a head with plain convs (v1) or GroupNorm
  convs without bias (v2);
- the same input: ``GeneralizedRCNNTransform`` resize (``data.resize=rcnn``, min_size 800,
  max_size 1333), ImageNet mean/std in [0, 1] RGB, padding to multiples of 32 that is zero
  after normalisation (``pad_after_norm``);
- the same anchors: sizes truncated to whole pixels and corners rounded
  (``integer_cells``), steps of input size // map size (``strides_from_input``);
- the same postprocess: score > 0.05, top 1000 per level, class-wise NMS at 0.5 (exact,
  like ``batched_nms``' per-class loop over 1000 candidates on CPU: ``nms_rank``), 300
  detections, box deltas clamped at log(1000 / 16) (``DeltaCoder``'s default).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import Tensor
from torchvision.models.detection import retinanet_resnet50_fpn, retinanet_resnet50_fpn_v2

from retina.convert.keys import (
    ConversionError,
    convert_state,
    invert,
    read_state_dict,
    resnet_prefixes,
    subnet_prefixes,
)
from retina.convert.write import (
    Converted,
    build_module,
    coco91_names,
    write_converted,
)
from retina.model.detector import Detector
from retina.training.checkpoint import module_from_checkpoint

log = logging.getLogger(__name__)

# variant -> experiment, torchvision builder, default BN epsilon of its files
VARIANTS = {
    "v1": ("retinanet_r50_coco_tv", retinanet_resnet50_fpn, 0.0),
    "v2": ("retinanet_r50_v2_coco_tv", retinanet_resnet50_fpn_v2, 1e-5),
}
HEADS = {"cls": "classification_head", "box": "regression_head"}


def prefixes(detector: Detector) -> dict[str, str]:
    """torchvision RetinaNet state-dict prefix -> retina Detector prefix."""
    table = {**resnet_prefixes("backbone.body."), "backbone.fpn.": "fpn.",
             "head.classification_head.cls_logits.": "head.cls_pred.",
             "head.regression_head.bbox_reg.": "head.box_pred."}
    for ours, theirs in HEADS.items():
        conv = f"head.{theirs}.conv.{{i}}."  # Conv2dNormActivation: 0 the conv, 1 the norm
        table.update(subnet_prefixes(getattr(detector.head, f"{ours}_subnet"),
                                     f"head.{ours}_subnet.", conv + "0.", conv + "1."))
    return table


def upgrade_head_layout(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Head convs named as before torchvision 0.13 (``conv.{2i}.weight``, a Sequential of
    convs and ReLUs; the released v1 COCO file) -> today's ``conv.{i}.0.weight``."""
    out = dict(state)
    for head in HEADS.values():
        for i in range(4):
            for kind in ("weight", "bias"):
                old = f"head.{head}.conv.{2 * i}.{kind}"
                if old in out:
                    out[f"head.{head}.conv.{i}.0.{kind}"] = out.pop(old)
    return out


def detect_variant(state: dict[str, Tensor]) -> str:
    """"v1" or "v2" from the head's norms and the input width of P6."""
    if "head.classification_head.cls_logits.weight" not in state:
        raise ConversionError("not a torchvision RetinaNet: no "
                              "head.classification_head.cls_logits.weight")
    gn = "head.classification_head.conv.0.1.weight" in state
    p6 = state.get("backbone.fpn.extra_blocks.p6.weight")
    p6_in = None if p6 is None else p6.shape[1]
    if not gn and p6_in == 256:
        return "v1"
    if gn and p6_in == 2048:
        return "v2"
    raise ConversionError(f"neither torchvision RetinaNet v1 nor v2: GroupNorm head {gn}, P6 "
                          f"input {p6_in} channels (v1: no norm, 256; v2: GroupNorm, 2048)")


def class_names(num_classes: int) -> tuple[list[str], list[int]]:
    """torchvision labels are the dataset's category ids: COCO's names for its 91, else
    "0".."K-1"."""
    names = coco91_names() if num_classes == 91 else [str(i) for i in range(num_classes)]
    return names, list(range(num_classes))


def convert(path: str | Path, out_dir: str | Path, variant: str | None = None,
            bn_eps: float | None = None, overrides: list[str] = ()) -> Converted:
    """A torchvision RetinaNet state dict -> retina checkpoint + safetensors export.

    Args:
        path: the ``.pth`` file (``RetinaNet_ResNet50_FPN_Weights.COCO_V1.url`` and the like,
            or your own ``model.state_dict()``).
        out_dir: output folder (``model.ckpt``, ``model.safetensors``, ``model.json``).
        variant: "v1" or "v2"; None: read from the file (and checked if given).
        bn_eps: BatchNorm epsilon; None: 0.0 for v1 (torchvision's COCO weights), 1e-5 for
            v2. A v1 model you trained yourself from ImageNet weights used 1e-5.
        overrides: Hydra overrides of the experiment (``data.min_size=320``, ...).
    """
    state, _ = read_state_dict(path)
    state = upgrade_head_layout(state)
    found = detect_variant(state)
    if variant is not None and variant != found:
        raise ConversionError(f"{path} holds a torchvision RetinaNet {found}, not {variant}")
    experiment, _, default_eps = VARIANTS[found]
    eps = default_eps if bn_eps is None else bn_eps
    num_classes = state["head.classification_head.cls_logits.weight"].shape[0] // 9
    names, ids = class_names(num_classes)
    settings = [f"model.detector.backbone.bn_eps={eps}", *overrides]
    module = build_module(experiment, settings, names, ids, Path(out_dir))
    source = {"format": "torchvision", "variant": found, "file": str(path),
              "bn_eps": eps}
    converted = write_converted(module, state, prefixes(module.detector), out_dir, source)
    log.info("torchvision RetinaNet %s, %d classes -> %s, %s", found, num_classes,
             converted.checkpoint, converted.export)
    return converted


def behaviour_differences(module) -> list[str]:
    """Settings of a retina RetinaNet that torchvision's RetinaNet computes otherwise (the
    weights fit, the detections would differ)."""
    det, post, coder = module.detector, module.postprocess, module.postprocess.coder
    anchors = det.anchors
    eps = next(m.eps for m in det.backbone.modules() if hasattr(m, "running_var"))
    expected = {
        "backbone: bn_eps (set it with overwrite_eps(model, eps))": (eps, 1e-5),
        "anchors: integer_cells": (anchors.integer_cells, True),
        "anchors: strides_from_input": (anchors.strides_from_input, True),
        "anchors: sizes": (anchors.sizes, (32.0, 64.0, 128.0, 256.0, 512.0)),
        "anchors: scales": (len(anchors.scales), 3),
        "anchors: ratios": (anchors.ratios, (0.5, 1.0, 2.0)),
        "anchors: offset": (anchors.offset, 0.0),
        "detector: pad_after_norm": (det.pad_after_norm, True),
        "detector: pixel_mean": ([round(v, 6) for v in det.pixel_mean.flatten().tolist()],
                                 [0.485, 0.456, 0.406]),
        "detector: pixel_std": ([round(v, 6) for v in det.pixel_std.flatten().tolist()],
                                [0.229, 0.224, 0.225]),
        "coder: weights": (tuple(getattr(coder, "weights", ())), (1.0, 1.0, 1.0, 1.0)),
        "postprocess: score_thresh": (post.score_thresh, 0.05),
        "postprocess: topk": (post.topk, 1000),
        "postprocess: nms_thresh": (post.nms_thresh, 0.5),
        "postprocess: max_det": (post.max_det, 300),
    }
    return [f"{name} is {ours}, torchvision's {theirs}" for name, (ours, theirs)
            in expected.items() if ours != theirs]


def to_torchvision(ckpt_path: str | Path, out: str | Path) -> Path:
    """A retina RetinaNet (ResNet-50-FPN, torchvision's head) -> the state dict of
    ``retinanet_resnet50_fpn`` (plain head, P6 from P5) or ``retinanet_resnet50_fpn_v2``
    (GroupNorm head, P6 from C5), for ``num_classes`` = the model's class count.

    The weights must fit the torchvision model exactly (a :class:`ConversionError` lists
    what does not); settings that change the detections but no weight (anchors,
    normalisation, thresholds) are listed in a warning. Batch-norm epsilon is not part of
    a state dict: a model with ``bn_eps=0`` needs ``overwrite_eps(model, 0.0)`` on the
    torchvision side (torchvision does that for its own v1 COCO weights).
    """
    module = module_from_checkpoint(ckpt_path)
    det = module.detector
    gn = any(isinstance(m, torch.nn.GroupNorm) for m in det.head.modules())
    variant = "v2" if gn else "v1"
    _, builder, _ = VARIANTS[variant]
    reference = builder(weights=None, weights_backbone=None, num_classes=module.num_classes)
    target = {k: v for k, v in reference.state_dict().items() if "num_batches_tracked" not in k}
    what = f"{ckpt_path} as torchvision RetinaNet {variant}"
    state = convert_state(det.state_dict(), invert(prefixes(det)), target, what)
    notes = behaviour_differences(module)
    if notes:
        log.warning("%s: the weights fit, but torchvision will detect otherwise: %s", what,
                    "; ".join(notes))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, out)
    log.info("%s -> %s (load it into %s(weights=None, weights_backbone=None, num_classes=%d))",
             ckpt_path, out, builder.__name__, module.num_classes)
    return out
