"""retina.model.backbone and timm_backbone: torchvision's families and timm's models as C3-C5
feature extractors, and their weights files (random or local weights: nothing downloaded)."""

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from retina.model.backbone import (
    freeze_batch_norms,
    mobilenet_v2,
    resnet,
    stride_groups,
    torchvision_backbone,
)
from retina.model.timm_backbone import TimmBackbone


def test_freeze_stages_and_frozen_bn():
    bb = resnet(18, freeze_stages=2)
    trainable = [n for n, p in bb.named_parameters() if p.requires_grad]
    assert trainable and not any(n.startswith(("stages.0.", "stages.1.")) for n in trainable)
    assert not any("bn" in n for n in trainable)  # FrozenBatchNorm2d has buffers only
    assert resnet(50).out_channels == (512, 1024, 2048)
    assert mobilenet_v2().out_channels == (32, 96, 1280)


def test_local_weights_file_and_offline_error(tmp_path, monkeypatch):
    src = resnet(18, frozen_bn=False)
    state = {k.replace("stages.0.0", "conv1").replace("stages.0.1", "bn1"): v for k, v in src.state_dict().items()}
    state = {k.replace("stages.1", "layer1").replace("stages.2", "layer2").replace("stages.3", "layer3").replace("stages.4", "layer4"): v for k, v in state.items()}
    path = tmp_path / "r18.pth"
    torch.save(state, path)
    loaded = resnet(18, weights=str(path), frozen_bn=False)
    torch.testing.assert_close(loaded.stages[2][0].conv1.weight, src.stages[2][0].conv1.weight)

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_home"))

    def offline(*a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError, match=r"Offline\? Put the file at .*resnet18-f37072fd.pth"):
        resnet(18, weights="IMAGENET1K_V1")
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        resnet(18, weights=str(tmp_path / "nope.pth"))
    with pytest.raises(ValueError, match="depth"):
        resnet(19)


def test_bn_eps_reaches_every_norm():
    net = resnet(18, bn_eps=0.0)
    norms = [m for m in net.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert len(norms) == 20 and all(m.eps == 0.0 for m in norms)
    bn = net.stages[0][1]
    bn.running_var.uniform_(0.5, 2.0)
    bn.running_mean.normal_()
    x = torch.randn(1, 64, 4, 4)
    expected = (x - bn.running_mean.view(1, -1, 1, 1)) / bn.running_var.view(1, -1, 1, 1).sqrt()
    torch.testing.assert_close(bn(x), expected)  # weight 1, bias 0: no epsilon in the root
    assert all(m.eps == 1e-5 for m in resnet(18).modules() if isinstance(m, FrozenBatchNorm2d))


def test_stride_in_1x1_moves_the_stride_of_the_first_blocks():
    torch.manual_seed(0)
    net = resnet(50, stride_in_1x1=True)
    block = net.stages[2][0]  # layer2's first block: 256 -> 512 channels, stride 2
    assert block.conv1.stride == (2, 2) and block.conv2.stride == (1, 1)
    for m in block.modules():  # random statistics, so that the norms are not the identity
        if isinstance(m, FrozenBatchNorm2d):
            m.weight.uniform_(0.5, 1.5)
            m.running_var.uniform_(0.5, 1.5)
    x = torch.randn(1, 256, 8, 8)
    # a strided 1x1 conv reads every other pixel: subsample first, then the stride-1 path
    h = block.relu(block.bn1(F.conv2d(x[..., ::2, ::2], block.conv1.weight)))
    h = block.relu(block.bn2(F.conv2d(h, block.conv2.weight, padding=1)))
    expected = block.relu(block.bn3(block.conv3(h)) + block.downsample(x))
    torch.testing.assert_close(block(x), expected)
    assert [f.shape for f in net(torch.rand(1, 3, 64, 64))] == [
        f.shape for f in resnet(50)(torch.rand(1, 3, 64, 64))]
    with pytest.raises(ValueError, match="bottleneck"):
        resnet(18, stride_in_1x1=True)


# ---------------------------------------------------------------- torchvision's families


def test_the_generic_route_cuts_resnet_as_the_resnet_factory(tmp_path):
    # the same network, stages, frozen parameters and outputs as resnet(18)
    net = torchvision.models.resnet18()
    torch.save(net.state_dict(), tmp_path / "r18.pth")
    old = resnet(18, weights=str(tmp_path / "r18.pth"), freeze_stages=2).eval()
    new = torchvision_backbone("resnet18", weights=str(tmp_path / "r18.pth"),
                               freeze_stages=2).eval()
    assert new.out_channels == old.out_channels == (128, 256, 512)
    # the stem and layer1 (the maxpool opens the generic stride-4 group: other key names)
    frozen = [p.shape for p in new.parameters() if not p.requires_grad]
    assert frozen == [p.shape for p in old.parameters() if not p.requires_grad] == [
        old.stages[0][0].weight.shape, *[p.shape for p in old.stages[1].parameters()]]
    x = torch.rand(1, 3, 64, 64)
    for a, b in zip(new(x), old(x)):
        torch.testing.assert_close(a, b)


def test_stride_groups_cut_where_the_stride_changes():
    layers = [nn.Conv2d(3, 4, 3, 2, 1), nn.ReLU(), nn.Conv2d(4, 8, 3, 2, 1),
              nn.Conv2d(8, 8, 3, 1, 1), nn.Conv2d(8, 16, 3, 2, 1)]
    groups, strides, channels = stride_groups(layers)
    assert strides == [2, 4, 8] and channels == [4, 8, 16]
    assert [len(g) for g in groups] == [2, 2, 1]


def test_frozen_batch_norms_compute_what_the_batch_norms_computed():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8, eps=1e-3), nn.ReLU())
    net[1].running_mean.normal_()
    net[1].running_var.uniform_(0.5, 2)
    net[1].weight.data.uniform_(0.5, 2)
    x = torch.randn(2, 3, 8, 8)
    expected = net.eval()(x)
    freeze_batch_norms(net)
    assert isinstance(net[1], FrozenBatchNorm2d) and net[1].eps == 1e-3
    torch.testing.assert_close(net(x), expected)


def test_a_new_family_loads_a_local_weights_file(tmp_path):
    src = torchvision.models.mobilenet_v3_small()
    torch.save(src.state_dict(), tmp_path / "mnv3.pth")
    bb = torchvision_backbone("mobilenet_v3_small", weights=str(tmp_path / "mnv3.pth"))
    assert bb.out_channels == (24, 48, 576)
    torch.testing.assert_close(bb.stages[0][0][0].weight, src.features[0][0].weight)
    torch.testing.assert_close(bb.stages[0][0][1].running_var, src.features[0][1].running_var)
    assert [f.shape[-1] for f in bb(torch.rand(1, 3, 128, 128))] == [16, 8, 4]


def test_an_unknown_or_foreign_arch_is_one_line_with_the_nearest_name():
    with pytest.raises(ValueError, match=r"'convnext_tiy'.*did you mean convnext_tiny\?"):
        torchvision_backbone("convnext_tiy")
    with pytest.raises(ValueError, match="'vit_b_16' is not one of torchvision's resnet"):
        torchvision_backbone("vit_b_16")


# ---------------------------------------------------------------- timm


def test_timm_features_at_strides_8_16_32_and_frozen_stem():
    bb = TimmBackbone("test_convnext", weights=None, freeze_stages=1)  # strides 4, 8, 16, 32
    feats = bb(torch.rand(2, 3, 128, 128))
    assert [tuple(f.shape) for f in feats] == [(2, 32, 16, 16), (2, 48, 8, 8), (2, 64, 4, 4)]
    assert bb.out_channels == (32, 48, 64)
    frozen = {n.split(".")[1] for n, p in bb.named_parameters() if not p.requires_grad}
    assert frozen == {"stem_0", "stem_1", "stages_0"}  # up to the stride-8 level
    assert all(p.requires_grad for p in TimmBackbone("test_convnext", freeze_stages=0).parameters())


def test_timm_weights_from_a_local_file(tmp_path):
    timm = pytest.importorskip("timm")
    src = timm.create_model("test_efficientnet")
    torch.save(src.state_dict(), tmp_path / "eff.pth")
    bb = TimmBackbone("test_efficientnet", weights=str(tmp_path / "eff.pth"), frozen_bn=False)
    torch.testing.assert_close(bb.body.conv_stem.weight, src.conv_stem.weight)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        TimmBackbone("test_efficientnet", weights=str(tmp_path / "nope.pth"))
    with pytest.raises(ValueError, match=r"timm has no model 'test_efficientnt' \(did you mean"):
        TimmBackbone("test_efficientnt")
