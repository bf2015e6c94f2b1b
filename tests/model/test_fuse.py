"""retina.model.fuse: batch norms folded into their convolutions give the same outputs."""

from functools import partial

import pytest
import torch
from torch import nn

from retina.model.anchors import AnchorGenerator
from retina.model.backbone import mobilenet_v2, resnet
from retina.model.detector import Detector
from retina.model.fuse import NORMS, count_batchnorms, fold_batchnorm
from retina.model.head import RetinaHead


def detector(backbone) -> Detector:
    """A detector whose batch norms all have non-trivial statistics and affine parameters
    (at init they are the identity map and a fold would prove nothing)."""
    torch.manual_seed(0)
    det = Detector(backbone, partial(RetinaHead, 3, group_norm=True), AnchorGenerator())
    g = torch.Generator().manual_seed(1)
    for m in det.modules():
        if isinstance(m, NORMS):
            for t, lo, hi in ((m.running_mean, -0.5, 0.5), (m.running_var, 0.5, 2.0),
                              (m.weight, 0.5, 1.5), (m.bias, -0.2, 0.2)):
                t.data.copy_(torch.rand(t.shape, generator=g) * (hi - lo) + lo)
    return det.eval()


@pytest.mark.parametrize("backbone", [
    partial(resnet, 18, frozen_bn=True), partial(resnet, 18, frozen_bn=False),
    partial(resnet, 50, frozen_bn=True, stride_in_1x1=True),
    partial(mobilenet_v2, frozen_bn=True), partial(mobilenet_v2, frozen_bn=False),
], ids=["resnet18-frozen", "resnet18-bn", "resnet50-caffe", "mobilenet-frozen", "mobilenet-bn"])
def test_folded_detector_gives_the_same_maps_without_a_batch_norm(backbone):
    det = detector(backbone())
    n_norms = count_batchnorms(det)
    folded = fold_batchnorm(det)
    assert n_norms >= 20 and count_batchnorms(folded) == 0  # every pair found
    assert count_batchnorms(det) == n_norms  # the original untouched
    images = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want, got = det(images), folded(images)
    for w, g in zip(want[0] + want[1], got[0] + got[1]):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4 * w.abs().max().item())


def test_only_eval_mode_batch_norms_after_their_conv_fold():
    conv_bn = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    bn_conv = nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 3))  # norm before the conv
    other = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.BatchNorm2d(4))  # not adjacent
    stats_free = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False))
    assert count_batchnorms(fold_batchnorm(conv_bn)) == 0
    for model in (bn_conv, other, stats_free):
        assert count_batchnorms(fold_batchnorm(model)) == 1
    assert conv_bn.training and not fold_batchnorm(conv_bn).training
