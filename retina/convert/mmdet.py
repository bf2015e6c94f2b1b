"""mmdetection's RetinaNet and GFL (ResNet-50-FPN) to retina's Detector.

Layout followed: mmdetection 3.x (3.3.0) ``RetinaNet`` / ``GFL`` state dicts, which name
these two models as 2.x does (the model-zoo files of ``retinanet_r50_fpn_1x_coco`` and
``gfl_r50_fpn_1x_coco`` are 2.x files):

    backbone.conv1.weight, backbone.bn1.*, backbone.layer{1..4}.{b}.conv{1,2,3}.weight,
        .bn{1,2,3}.*, .downsample.{0,1}.*                  ResNet, torchvision's names
    neck.lateral_convs.{0..2}.conv.weight/bias              FPN 1x1 on C3..C5
    neck.fpn_convs.{0..2}.conv.weight/bias                  FPN 3x3 -> P3..P5
    neck.fpn_convs.{3,4}.conv.weight/bias                   P6 (stride 2, on C5 for
                                                            add_extra_convs='on_input',
                                                            on P5 for 'on_output'), P7
    bbox_head.{cls,reg}_convs.{0..3}.conv.weight[/bias]     head towers (GFL: .gn.weight/bias
                                                            after a conv without bias)
    bbox_head.retina_cls / retina_reg                       RetinaNet predictors (A*K, A*4)
    bbox_head.gfl_cls / gfl_reg                             GFL predictors (K, 4*(reg_max+1))
    bbox_head.scales.{0..4}.scale                           GFL: one scalar per level
    bbox_head.integral.project                              GFL: the bins 0..reg_max (checked)

What the converted model reproduces (experiments ``retinanet_r50_coco_mmdet`` and
``gfl_r50_coco_mmdet``): the network exactly (FPN without ReLU before P7, zero padding
after normalisation, mean/std of the data preprocessor, BGR input of Caffe-style models
by swapping the first conv's input channels), the anchors, the coders and mmdetection
3.x's ``test_cfg`` (score 0.05, top 1000 per level, NMS 0.5 / 0.6, 100 detections).
Not reproduced bit for bit: mmcv's image resize (cv2, sizes rounded to nearest: the
experiments use torchvision's float bilinear at 800 / 1333), the lower clamp of box
deltas (RetinaNet, boxes under 1.6 % of their anchor), ``min_bbox_size=0``'s removal
of empty boxes, and mmcv's ``batched_nms``, which shifts the classes in float32 (2^-7 px
steps at 80 classes x 1333 px): ours is exact per class, so boxes whose IoU is that close
to the NMS threshold may be kept where mmdetection drops them, or the reverse.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
from torch import Tensor

from retina.convert.keys import ConversionError, read_state_dict, resnet_prefixes, subnet_prefixes
from retina.convert.write import Converted, build_module, coco80, write_converted
from retina.model.detector import Detector

log = logging.getLogger(__name__)

MMDET_LAYOUT = "mmdetection 3.x (3.3.0), same names as 2.x for RetinaNet and GFL"
EXPERIMENTS = {"retinanet": "retinanet_r50_coco_mmdet", "gfl": "gfl_r50_coco_mmdet"}
PREDICTORS = {"retinanet": "retina", "gfl": "gfl"}
# data_preprocessor of each ResNet style: mean, std (0-255, in the model's channel order),
# bgr_to_rgb (True: the model reads RGB), stride in the 1x1 conv
STYLES = {
    "pytorch": ([123.675, 116.28, 103.53], [58.395, 57.12, 57.375], True, False),
    "caffe": ([103.53, 116.28, 123.675], [1.0, 1.0, 1.0], False, True),
}
FIRST_CONV = "backbone.conv1.weight"
SCALE_KEY = re.compile(r"bbox_head\.scales\.(\d+)\.scale")
INTEGRAL = "bbox_head.integral.project"


def prefixes(detector: Detector, model: str) -> dict[str, str]:
    """mmdetection state-dict prefix -> retina Detector prefix."""
    table = resnet_prefixes("backbone.")
    for i in range(3):
        table[f"neck.lateral_convs.{i}.conv."] = f"fpn.inner_blocks.{i}.0."
        table[f"neck.fpn_convs.{i}.conv."] = f"fpn.layer_blocks.{i}.0."
    table["neck.fpn_convs.3.conv."] = "fpn.extra_blocks.p6."
    table["neck.fpn_convs.4.conv."] = "fpn.extra_blocks.p7."
    for ours, theirs in (("cls", "cls_convs"), ("box", "reg_convs")):
        table.update(subnet_prefixes(getattr(detector.head, f"{ours}_subnet"),
                                     f"head.{ours}_subnet.", f"bbox_head.{theirs}.{{i}}.conv.",
                                     f"bbox_head.{theirs}.{{i}}.gn."))
    name = PREDICTORS[model]
    table[f"bbox_head.{name}_cls."] = "head.cls_pred."
    table[f"bbox_head.{name}_reg."] = "head.box_pred."
    table["head.scales"] = "head.scales"  # stacked by gfl_scales
    return table


def detect_model(state: dict[str, Tensor]) -> str:
    """"retinanet" or "gfl" from the head's predictor names."""
    found = [m for m, name in PREDICTORS.items() if f"bbox_head.{name}_cls.weight" in state]
    if len(found) != 1:
        raise ConversionError("not an mmdetection RetinaNet or GFL: no bbox_head.retina_cls or "
                              "bbox_head.gfl_cls weights")
    return found[0]


def gfl_scales(state: dict[str, Tensor], reg_max: int) -> dict[str, Tensor]:
    """GFL's per-level ``Scale`` scalars stacked into ``head.scales`` (L,), and its
    integral's bins checked against 0..reg_max (then left out: retina's coder has them)."""
    out = dict(state)
    found = {int(m.group(1)): out.pop(k) for k in list(out) if (m := SCALE_KEY.fullmatch(k))}
    if found:
        if sorted(found) != list(range(len(found))):
            raise ConversionError(f"GFL scales of levels {sorted(found)}, not 0..{len(found) - 1}")
        out["head.scales"] = torch.stack([found[i].reshape(()) for i in range(len(found))])
    if INTEGRAL in out:
        bins = out.pop(INTEGRAL)
        if not torch.equal(bins.float(), torch.arange(reg_max + 1, dtype=torch.float32)):
            raise ConversionError(f"{INTEGRAL} is {bins.tolist()}, not the bins 0..{reg_max} "
                                  "of model.detector.head.reg_max")
    return out


def to_rgb(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A model that reads BGR made to read RGB: the first conv's input channels reversed."""
    return {**state, FIRST_CONV: state[FIRST_CONV].flip(1)}


def classes(extra: dict, num_classes: int) -> tuple[list[str], list[int]]:
    """Class names from the file's ``meta`` (2.x ``CLASSES``, 3.x ``dataset_meta.classes``),
    else COCO's 80 for 80 classes, else "0".."K-1"; COCO's category ids for COCO's
    classes, else 1..K."""
    meta = extra.get("meta") or {}
    names = meta.get("CLASSES") or (meta.get("dataset_meta") or {}).get("classes")
    coco_names, coco_ids = coco80()
    if names is None:
        names = coco_names if num_classes == 80 else [str(i) for i in range(num_classes)]
    names = [str(n) for n in names]
    if len(names) != num_classes:
        raise ConversionError(f"the file's meta names {len(names)} classes, its head predicts "
                              f"{num_classes}")
    return names, coco_ids if names == coco_names else list(range(1, num_classes + 1))


def normalisation(mean: list[float], std: list[float], bgr_to_rgb: bool) -> list[str]:
    """Overrides of the Detector's pixel_mean / pixel_std ([0, 1], RGB) for mmdetection's
    data preprocessor (0-255, in the model's channel order: BGR when not ``bgr_to_rgb``)."""
    if len(mean) != 3 or len(std) != 3:
        raise ConversionError(f"mean and std need 3 values each, got {mean}, {std}")

    def rgb_unit(values: list[float]) -> str:
        values = list(values) if bgr_to_rgb else list(values)[::-1]
        return "[" + ",".join(repr(v / 255) for v in values) + "]"

    return [f"model.detector.pixel_mean={rgb_unit(mean)}",
            f"model.detector.pixel_std={rgb_unit(std)}"]


def convert(path: str | Path, out_dir: str | Path, model: str | None = None,
            style: str = "pytorch", mean: list[float] | None = None,
            std: list[float] | None = None, bgr_to_rgb: bool | None = None,
            overrides: list[str] = ()) -> Converted:
    """An mmdetection RetinaNet or GFL R50-FPN checkpoint -> retina checkpoint + export.

    Args:
        path: the ``.pth`` file (model zoo or your own; a bare state dict works too).
        out_dir: output folder (``model.ckpt``, ``model.safetensors``, ``model.json``).
        model: "retinanet" or "gfl"; None: read from the file (and checked if given).
        style: the ResNet's ``style``: "pytorch" (torchvision's blocks, RGB, ImageNet
            mean/std in 0-255) or "caffe" (stride in the 1x1 conv, BGR, mean only).
        mean, std, bgr_to_rgb: the data preprocessor's, when not the style's defaults.
        overrides: Hydra overrides of the experiment (``data.min_size=640``, ...).
    """
    if style not in STYLES:
        raise ConversionError(f"style must be one of {', '.join(STYLES)}, got {style!r}")
    state, extra = read_state_dict(path)
    found = detect_model(state)
    if model is not None and model != found:
        raise ConversionError(f"{path} holds an mmdetection {found}, not {model}")
    d_mean, d_std, d_rgb, stride_in_1x1 = STYLES[style]
    rgb = d_rgb if bgr_to_rgb is None else bgr_to_rgb
    cls = state[f"bbox_head.{PREDICTORS[found]}_cls.weight"].shape[0]
    num_classes = cls if found == "gfl" else cls // 9
    names, ids = classes(extra, num_classes)
    settings = [*normalisation(mean or d_mean, std or d_std, rgb),
                f"model.detector.backbone.stride_in_1x1={stride_in_1x1}", *overrides]
    module = build_module(EXPERIMENTS[found], settings, names, ids, Path(out_dir))
    if found == "gfl":
        state = gfl_scales(state, module.detector.head.reg_max)
    if not rgb:
        state = to_rgb(state)
    source = {"format": "mmdetection", "model": found, "layout": MMDET_LAYOUT, "style": style,
              "file": str(path)}
    converted = write_converted(module, state, prefixes(module.detector, found), out_dir, source)
    log.info("mmdetection %s (%s style), %d classes -> %s, %s", found, style, num_classes,
             converted.checkpoint, converted.export)
    return converted
