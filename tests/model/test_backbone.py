"""retina.model.backbone: ResNet / MobileNetV2 feature extractors and their weights files."""

import pytest
import torch

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
