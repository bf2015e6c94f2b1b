"""Backbones that return the C3, C4 and C5 feature maps (strides 8, 16, 32).

One route for torchvision's families (:func:`torchvision_backbone`: ResNet, ResNeXt,
Wide ResNet, MobileNetV2/V3, EfficientNet, RegNet, ConvNeXt): the network's feature layers in
forward order, cut where the stride changes (:func:`stride_groups`); C3-C5 are the ends of the
stride-8, 16 and 32 groups. :func:`resnet` and :func:`mobilenet_v2` are the first two, kept for
their options (``bn_eps``, ``stride_in_1x1``) and the checkpoints that name them; timm's
catalogue is :class:`retina.model.timm_backbone.TimmBackbone`.

Weights are given as ``None`` (random init), a torchvision weights name
(``"IMAGENET1K_V1"`` or ``"ResNet50_Weights.IMAGENET1K_V1"``) or a path to a local
state-dict file. Loading goes through torchvision's weights API, so a file placed in
``$TORCH_HOME/hub/checkpoints/`` is used offline exactly as torchvision would use it.
"""

from __future__ import annotations

import difflib
import os
from functools import partial
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn
from torchvision.ops import FrozenBatchNorm2d

RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")
# torchvision's model names that :func:`torchvision_backbone` cuts (by prefix)
FAMILIES = ("resnet", "resnext", "wide_resnet", "mobilenet_v2", "mobilenet_v3", "efficientnet",
            "regnet", "convnext")
LEVEL_STRIDES = (8, 16, 32)  # C3, C4, C5


class Backbone(nn.Module):
    """A feature extractor made of consecutive stages.

    ``stages[0]`` is the stem; the outputs of the stages named in ``out_stages`` are
    returned, in order, as C3, C4, C5.

    Args:
        stages: the network cut into consecutive stages.
        out_stages: indices of the stages whose outputs are C3, C4, C5.
        out_channels: channels of C3, C4, C5.
        freeze_stages: the first N stages get ``requires_grad=False`` (0: all train).
    """

    def __init__(
        self,
        stages: list[nn.Module],
        out_stages: tuple[int, int, int],
        out_channels: tuple[int, int, int],
        freeze_stages: int = 0,
    ) -> None:
        super().__init__()
        if not 0 <= freeze_stages <= len(stages):
            raise ValueError(f"freeze_stages must be in [0, {len(stages)}], got {freeze_stages}")
        self.stages = nn.ModuleList(stages[: max(out_stages) + 1])
        self.out_stages = tuple(out_stages)
        self.out_channels = tuple(out_channels)
        for stage in self.stages[:freeze_stages]:
            stage.requires_grad_(False)

    def forward(self, x: Tensor) -> list[Tensor]:
        """(B, 3, H, W) normalised images -> [C3 (B, c3, H/8, W/8), C4, C5]."""
        feats = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.out_stages:
                feats.append(x)
        return feats


def _weights_arg(arch: str, weights: str | None):
    """Resolve a weights spec into a torchvision ``WeightsEnum``, a local path or None."""
    if weights is None or str(weights).lower() in ("", "none", "null"):
        return None
    if os.path.sep in str(weights) or str(weights).endswith((".pth", ".pt", ".safetensors")):
        return Path(weights)
    if "." in weights:
        return torchvision.models.get_weight(weights)
    return torchvision.models.get_model_weights(arch)[weights]


def _load_weights(model: nn.Module, arch: str, weights: str | None) -> None:
    spec = _weights_arg(arch, weights)
    if spec is None:
        return
    if isinstance(spec, Path):
        if not spec.is_file():
            raise FileNotFoundError(f"backbone weights file not found: {spec}")
        state = torch.load(spec, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
    else:
        url = spec.url
        cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
        try:
            state = spec.get_state_dict(progress=False, check_hash=False)
        except Exception as err:  # urllib / socket / SSL errors when offline
            raise RuntimeError(
                f"could not fetch {arch} weights {spec} from {url} ({type(err).__name__}: "
                f"{err}). Offline? Put the file at {cached} or pass a local path as "
                f"weights=/path/to/{os.path.basename(url)}"
            ) from err
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.") and not k.startswith("classifier.")]
    unexpected = [k for k in unexpected if not k.startswith(("fc.", "classifier."))]
    if missing or unexpected:
        raise RuntimeError(
            f"{arch} weights {weights} do not fit: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )


def resnet(
    depth: int = 50, weights: str | None = None, frozen_bn: bool = True, freeze_stages: int = 1,
    bn_eps: float = 1e-5, stride_in_1x1: bool = False,
) -> Backbone:
    """torchvision ResNet-18/34/50/101 cut into stem + layer1..4; C3-C5 = layer2..4.

    Args:
        depth: 18, 34, 50 or 101.
        weights: None, a torchvision weights name or a local file path.
        frozen_bn: use ``FrozenBatchNorm2d`` (statistics and affine fixed).
        freeze_stages: freeze the stem and the first ``freeze_stages - 1`` layers
            (0: everything trains; 1: the stem is frozen, torchvision's default of
            three trainable stages is ``freeze_stages=2``).
        bn_eps: epsilon of every batch norm, added to the running variance. torchvision
            sets 0.0 for its RetinaNet v1 COCO weights (``overwrite_eps``), which were
            trained without one.
        stride_in_1x1: the stride-2 blocks of layer2..4 stride in their first 1x1 conv
            instead of the 3x3 (Caffe-style ResNets: MSRA's, mmdetection's
            ``style='caffe'``, detectron2's ``STRIDE_IN_1X1``); depth 50 and 101 only.
    """
    arch = f"resnet{depth}"
    if arch not in RESNETS:
        raise ValueError(f"resnet depth must be one of 18, 34, 50, 101, got {depth}")
    if stride_in_1x1 and depth < 50:
        raise ValueError(f"stride_in_1x1 needs bottleneck blocks (depth 50 or 101), got {depth}")
    norm = partial(FrozenBatchNorm2d if frozen_bn else nn.BatchNorm2d, eps=bn_eps)
    net = getattr(torchvision.models, arch)(weights=None, norm_layer=norm)
    _load_weights(net, arch, weights)
    if stride_in_1x1:
        for layer in (net.layer2, net.layer3, net.layer4):
            first = layer[0]  # (1x1, stride 1) + (3x3, stride 2) -> (1x1, stride 2) + (3x3, 1)
            first.conv1.stride, first.conv2.stride = first.conv2.stride, (1, 1)
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
    stages = [stem, net.layer1, net.layer2, net.layer3, net.layer4]
    width = 512 if depth < 50 else 2048
    return Backbone(stages, (2, 3, 4), (width // 4, width // 2, width), freeze_stages)


def mobilenet_v2(
    weights: str | None = None, frozen_bn: bool = True, freeze_stages: int = 1
) -> Backbone:
    """torchvision MobileNetV2; C3-C5 taken at the ends of the stride-8, 16, 32 stages.

    Stages (by ``features`` index): [0:2] stride 2, [2:4] stride 4, [4:7] stride 8
    (32 ch), [7:14] stride 16 (96 ch), [14:19] stride 32 (1280 ch, the final 1x1 conv).
    """
    norm = FrozenBatchNorm2d if frozen_bn else nn.BatchNorm2d
    net = torchvision.models.mobilenet_v2(weights=None, norm_layer=norm)
    _load_weights(net, "mobilenet_v2", weights)
    f = net.features
    bounds = [(0, 2), (2, 4), (4, 7), (7, 14), (14, 19)]
    stages = [nn.Sequential(*f[a:b]) for a, b in bounds]
    return Backbone(stages, (2, 3, 4), (32, 96, 1280), freeze_stages)



# ---------------------------------------------------------------- torchvision's families


def freeze_batch_norms(module: nn.Module) -> nn.Module:
    """``module`` with every ``nn.BatchNorm2d`` replaced, in place, by a ``FrozenBatchNorm2d``
    holding its statistics, affine parameters and epsilon (the same output in eval mode)."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            if child.affine:
                frozen.weight.copy_(child.weight.detach())
                frozen.bias.copy_(child.bias.detach())
            frozen.running_mean.copy_(child.running_mean)
            frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            freeze_batch_norms(child)
    return module


def feature_layers(net: nn.Module, arch: str) -> list[nn.Module]:
    """The feature layers of a torchvision classifier in forward order (pooling and classifier
    left out)."""
    if arch.startswith(("resnet", "resnext", "wide_resnet")):
        return [net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3,
                net.layer4]
    if arch.startswith("regnet"):
        return [net.stem, *net.trunk_output]
    return list(net.features)  # MobileNetV2/V3, EfficientNet, ConvNeXt


@torch.no_grad()
def stride_groups(layers: list[nn.Module], probe: int = 64
                  ) -> tuple[list[nn.Sequential], list[int], list[int]]:
    """Consecutive ``layers`` grouped by the stride of their output, measured on a
    (1, 3, probe, probe) input in eval mode.

    Returns:
        ``(groups, strides, channels)``: one ``nn.Sequential`` per stride (2, 4, ... in order),
        its output stride and its output channels.
    """
    modes = [m.training for m in layers]
    for m in layers:
        m.eval()
    x = torch.zeros(1, 3, probe, probe)
    groups: list[list[nn.Module]] = []
    strides: list[int] = []
    channels: list[int] = []
    for layer in layers:
        x = layer(x)  # (1, C, probe / s, probe / s)
        stride = probe // x.shape[-1]
        if strides and strides[-1] == stride:
            groups[-1].append(layer)
            channels[-1] = x.shape[1]
        else:
            groups.append([layer])
            strides.append(stride)
            channels.append(x.shape[1])
    for m, mode in zip(layers, modes):
        m.train(mode)
    return [nn.Sequential(*g) for g in groups], strides, channels


def _check_arch(arch: str) -> None:
    known = [m for m in torchvision.models.list_models(module=torchvision.models)
             if m.startswith(FAMILIES)]
    if arch not in known:
        close = difflib.get_close_matches(arch, known, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ValueError(f"backbone arch {arch!r} is not one of torchvision's {', '.join(FAMILIES)} "
                         f"models{hint}; e.g. {', '.join(known[:3])}, ...")


def torchvision_backbone(
    arch: str = "resnext50_32x4d", weights: str | None = None, frozen_bn: bool = True,
    freeze_stages: int = 1,
) -> Backbone:
    """Any torchvision ResNet, ResNeXt, Wide ResNet, MobileNetV2/V3, EfficientNet, RegNet or
    ConvNeXt as C3-C5: its feature layers cut into stride groups (:func:`stride_groups`), C3-C5
    the ends of the stride-8, 16 and 32 groups (the last 1x1 conv of MobileNet and EfficientNet
    included in C5, as :func:`mobilenet_v2`).

    Args:
        arch: torchvision's model name (``torchvision.models.list_models()``), e.g.
            ``resnext50_32x4d``, ``mobilenet_v3_large``, ``efficientnet_b0``,
            ``regnet_x_1_6gf``, ``convnext_tiny``.
        weights: None, a torchvision weights name of ``arch`` or a local state-dict file.
        frozen_bn: batch norms become ``FrozenBatchNorm2d`` (ConvNeXt's LayerNorms stay).
        freeze_stages: the first N stride groups get ``requires_grad=False`` (stride 2, then
            4, ...; ConvNeXt starts at stride 4). ResNet's stem is the stride-2 group, so N
            freezes what :func:`resnet` freezes with the same N.

    Raises:
        ValueError: an ``arch`` of another family, or unknown (the nearest name is given).
    """
    _check_arch(arch)
    net = torchvision.models.get_model(arch, weights=None)
    _load_weights(net, arch, weights)
    if frozen_bn:
        freeze_batch_norms(net)
    groups, strides, channels = stride_groups(feature_layers(net, arch))
    missing = [s for s in LEVEL_STRIDES if s not in strides]
    if missing:
        raise ValueError(f"{arch} has no stride {missing} output (strides {strides})")
    out = tuple(strides.index(s) for s in LEVEL_STRIDES)
    return Backbone(groups, out, tuple(channels[i] for i in out), freeze_stages)
