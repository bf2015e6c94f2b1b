"""mmdetection RetinaNet / GFL R50-FPN state dicts and their forward pass, written from
mmdetection's documented names and shapes (3.x layout, as ``retina/convert/mmdet.py``) with
``torch.nn.functional`` only: the oracle the converted Detector is checked against.

Random weights with sane statistics: convs ~ N(0, 2 / fan_in), norms near 1, running
variances in [0.5, 1.5], and the last norm of each residual branch at ~0.2 (trained
ResNets have small ones; an undamped random ResNet amplifies float rounding ~1000x).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

BLOCKS = (3, 4, 6, 3)  # ResNet-50
REG_MAX = 16


def _conv(shape: tuple[int, ...], g: torch.Generator, bias: bool) -> dict[str, Tensor]:
    fan_in = shape[1] * shape[2] * shape[3]
    out = {"weight": torch.randn(shape, generator=g) * (2 / fan_in) ** 0.5}
    if bias:
        out["bias"] = torch.randn(shape[0], generator=g) * 0.1
    return out


def _norm(n: int, g: torch.Generator, gain: float = 1.0, stats: bool = True) -> dict[str, Tensor]:
    out = {"weight": gain * (1 + 0.1 * torch.randn(n, generator=g)),
           "bias": 0.1 * torch.randn(n, generator=g)}
    if stats:
        out |= {"running_mean": 0.1 * torch.randn(n, generator=g),
                "running_var": 0.5 + torch.rand(n, generator=g),
                "num_batches_tracked": torch.tensor(1000)}
    return out


def _put(state: dict, prefix: str, tensors: dict[str, Tensor]) -> None:
    state.update({f"{prefix}.{k}": v for k, v in tensors.items()})


def mmdet_state(model: str, num_classes: int, seed: int = 0) -> dict[str, Tensor]:
    """A state dict named as mmdetection's ``RetinaNet`` ("retinanet") or ``GFL`` ("gfl")
    with a ResNet-50 backbone, FPN (RetinaNet: P6 on C5; GFL: on P5) and head."""
    g = torch.Generator().manual_seed(seed)
    s: dict[str, Tensor] = {}
    _put(s, "backbone.conv1", _conv((64, 3, 7, 7), g, bias=False))
    _put(s, "backbone.bn1", _norm(64, g))
    in_ch = 64
    for layer, blocks in enumerate(BLOCKS, start=1):
        planes = 64 * 2 ** (layer - 1)
        for b in range(blocks):
            name = f"backbone.layer{layer}.{b}"
            _put(s, f"{name}.conv1", _conv((planes, in_ch, 1, 1), g, bias=False))
            _put(s, f"{name}.bn1", _norm(planes, g))
            _put(s, f"{name}.conv2", _conv((planes, planes, 3, 3), g, bias=False))
            _put(s, f"{name}.bn2", _norm(planes, g))
            _put(s, f"{name}.conv3", _conv((4 * planes, planes, 1, 1), g, bias=False))
            _put(s, f"{name}.bn3", _norm(4 * planes, g, gain=0.2))
            if b == 0:
                _put(s, f"{name}.downsample.0", _conv((4 * planes, in_ch, 1, 1), g, bias=False))
                _put(s, f"{name}.downsample.1", _norm(4 * planes, g))
            in_ch = 4 * planes
    for i, c in enumerate((512, 1024, 2048)):
        _put(s, f"neck.lateral_convs.{i}.conv", _conv((256, c, 1, 1), g, bias=True))
        _put(s, f"neck.fpn_convs.{i}.conv", _conv((256, 256, 3, 3), g, bias=True))
    p6_in = 2048 if model == "retinanet" else 256  # on_input (C5) / on_output (P5)
    _put(s, "neck.fpn_convs.3.conv", _conv((256, p6_in, 3, 3), g, bias=True))
    _put(s, "neck.fpn_convs.4.conv", _conv((256, 256, 3, 3), g, bias=True))
    gn = model == "gfl"
    for tower in ("cls_convs", "reg_convs"):
        for i in range(4):
            _put(s, f"bbox_head.{tower}.{i}.conv", _conv((256, 256, 3, 3), g, bias=not gn))
            if gn:
                _put(s, f"bbox_head.{tower}.{i}.gn", _norm(256, g, stats=False))
    if model == "retinanet":
        _put(s, "bbox_head.retina_cls", _conv((9 * num_classes, 256, 3, 3), g, bias=True))
        _put(s, "bbox_head.retina_reg", _conv((36, 256, 3, 3), g, bias=True))
    else:
        _put(s, "bbox_head.gfl_cls", _conv((num_classes, 256, 3, 3), g, bias=True))
        _put(s, "bbox_head.gfl_reg", _conv((4 * (REG_MAX + 1), 256, 3, 3), g, bias=True))
        for i in range(5):
            s[f"bbox_head.scales.{i}.scale"] = torch.tensor(1 + 0.2 * float(torch.randn(1, generator=g)))
        s["bbox_head.integral.project"] = torch.linspace(0, REG_MAX, REG_MAX + 1)
    return s


def conv(x: Tensor, s: dict, name: str, stride: int = 1, padding: int = 0) -> Tensor:
    return F.conv2d(x, s[f"{name}.weight"], s.get(f"{name}.bias"), stride, padding)


def bn(x: Tensor, s: dict, name: str) -> Tensor:
    return F.batch_norm(x, s[f"{name}.running_mean"], s[f"{name}.running_var"],
                        s[f"{name}.weight"], s[f"{name}.bias"], False, 0.0, 1e-5)


def resnet50(x: Tensor, s: dict, caffe: bool) -> list[Tensor]:
    """C3, C4, C5; ``caffe``: the stride in each first block's 1x1 conv, not the 3x3."""
    x = F.relu(bn(conv(x, s, "backbone.conv1", 2, 3), s, "backbone.bn1"))
    x = F.max_pool2d(x, 3, 2, 1)
    outs = []
    for layer, blocks in enumerate(BLOCKS, start=1):
        for b in range(blocks):
            name = f"backbone.layer{layer}.{b}"
            stride = 2 if layer > 1 and b == 0 else 1
            s1, s2 = (stride, 1) if caffe else (1, stride)
            out = F.relu(bn(conv(x, s, f"{name}.conv1", s1), s, f"{name}.bn1"))
            out = F.relu(bn(conv(out, s, f"{name}.conv2", s2, 1), s, f"{name}.bn2"))
            out = bn(conv(out, s, f"{name}.conv3"), s, f"{name}.bn3")
            if b == 0:
                x = bn(conv(x, s, f"{name}.downsample.0", stride), s, f"{name}.downsample.1")
            x = F.relu(out + x)
        outs.append(x)
    return outs[1:]


def fpn(c: list[Tensor], s: dict, on_input: bool) -> list[Tensor]:
    """P3..P7: laterals, top-down sums with nearest upsampling, 3x3 convs, P6 by a stride-2
    conv on C5 (``on_input``) or P5, P7 on P6 without a ReLU."""
    lat = [conv(x, s, f"neck.lateral_convs.{i}.conv") for i, x in enumerate(c)]
    for i in (2, 1):
        lat[i - 1] = lat[i - 1] + F.interpolate(lat[i], size=lat[i - 1].shape[-2:], mode="nearest")
    p = [conv(x, s, f"neck.fpn_convs.{i}.conv", 1, 1) for i, x in enumerate(lat)]
    p.append(conv(c[-1] if on_input else p[-1], s, "neck.fpn_convs.3.conv", 2, 1))
    p.append(conv(p[-1], s, "neck.fpn_convs.4.conv", 2, 1))
    return p


def head(p: list[Tensor], s: dict, model: str) -> tuple[list[Tensor], list[Tensor]]:
    """Class and box maps per level: 4 x (conv [+ GroupNorm] + ReLU) towers, predictors,
    GFL's box maps times the level's scale."""
    gn = model == "gfl"
    pred = "retina" if model == "retinanet" else "gfl"
    cls_maps, box_maps = [], []
    for level, x in enumerate(p):
        towers = []
        for tower in ("cls_convs", "reg_convs"):
            y = x
            for i in range(4):
                y = conv(y, s, f"bbox_head.{tower}.{i}.conv", 1, 1)
                if gn:
                    y = F.group_norm(y, 32, s[f"bbox_head.{tower}.{i}.gn.weight"],
                                     s[f"bbox_head.{tower}.{i}.gn.bias"])
                y = F.relu(y)
            towers.append(y)
        cls_maps.append(conv(towers[0], s, f"bbox_head.{pred}_cls", 1, 1))
        box = conv(towers[1], s, f"bbox_head.{pred}_reg", 1, 1)
        box_maps.append(box * s[f"bbox_head.scales.{level}.scale"] if gn else box)
    return cls_maps, box_maps


def forward(image: Tensor, s: dict, model: str, mean: list[float], std: list[float],
            bgr: bool, caffe: bool, padded: tuple[int, int]) -> tuple[list[Tensor], list[Tensor]]:
    """mmdetection's data preprocessor and network on one image.

    Args:
        image: (3, h, w) RGB, 0-255 float.
        mean, std: 0-255, in the model's channel order.
        bgr: the model reads BGR (``bgr_to_rgb=False``).
        caffe: Caffe-style ResNet.
        padded: (H, W) the normalised image is zero-padded to.
    """
    x = image.flip(0) if bgr else image
    x = (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    x = F.pad(x, (0, padded[1] - x.shape[-1], 0, padded[0] - x.shape[-2]))[None]
    return head(fpn(resnet50(x, s, caffe), s, on_input=model == "retinanet"), s, model)
