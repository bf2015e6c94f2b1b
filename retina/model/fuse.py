"""Batch norms folded into the convolutions before them, for inference and export.

In eval mode a batch norm is a per-channel affine map ``y = x * s + t`` with
``s = weight / sqrt(running_var + eps)`` and ``t = bias - running_mean * s``; after a
convolution it folds into the convolution's weight (``W * s`` per output channel) and bias
(``b * s + t``). The folded network computes the same function (to float rounding) with
one pass over each feature map instead of two.

Pairs are found by walking the module tree, without tracing: a ``Conv2d`` directly
followed, among its parent's children in registration order, by a ``BatchNorm2d`` or a
``FrozenBatchNorm2d`` over its output channels. That is the order torchvision's ResNets
(``conv1``, ``bn1``, ...; ``downsample``) and MobileNets (``Conv2dNormActivation``)
register and run them in; the tests compare folded and unfolded outputs for both.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torchvision.ops import FrozenBatchNorm2d

NORMS = (nn.BatchNorm2d, FrozenBatchNorm2d)


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    if not (type(conv) is nn.Conv2d and isinstance(bn, NORMS)):
        return False
    if isinstance(bn, nn.BatchNorm2d) and (bn.training or bn.running_mean is None):
        return False  # batch statistics: nothing fixed to fold
    return bn.running_mean.numel() == conv.out_channels


def _fold_children(module: nn.Module) -> int:
    folded = 0
    children = list(module.named_children())
    for (name, conv), (bn_name, bn) in zip(children, children[1:]):
        if _foldable(conv, bn):
            with torch.no_grad():  # FrozenBatchNorm2d has the same buffers and eps
                setattr(module, name, fuse_conv_bn_eval(conv, bn))
            setattr(module, bn_name, nn.Identity())
            folded += 1
    for _, child in children:
        folded += _fold_children(child)
    return folded


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (in eval mode) with every conv + batch norm pair folded into one
    conv with a bias; ``model`` itself is left as it is.

    Batch norms in training mode use batch statistics and are not folded, which is why the
    copy is put in eval mode first. The copy's state dict has other keys (no ``bn*``
    entries): save the unfolded model's weights, fold when loading for inference.
    """
    folded = copy.deepcopy(model).eval()
    _fold_children(folded)
    return folded


def count_batchnorms(model: nn.Module) -> int:
    """Batch norms left in ``model`` (0 after :func:`fold_batchnorm` of a ResNet or MobileNet)."""
    return sum(isinstance(m, NORMS) for m in model.modules())
