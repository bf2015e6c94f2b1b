"""retina.model.backbone: ResNet / MobileNetV2 feature extractors and their weights files."""

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import FrozenBatchNorm2d

from retina.model.backbone import mobilenet_v2, resnet


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
