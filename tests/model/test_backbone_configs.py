"""``model/backbone=resnet34|resnet101`` through the real configs (weights=null: no download;
ResNet-18/50 and MobileNetV2 are built in test_backbone.py and by every training test): each
builds the torchvision network it names, cut at C3-C5, and a detector on it gives maps at
strides 8 to 128."""

import pytest
import torch
from hydra.utils import instantiate

# torchvision's depths per stage (layer1..4) and C3-C5 channels
RESNETS = {
    "resnet34": ([3, 4, 6, 3], (128, 256, 512)),
    "resnet101": ([3, 4, 23, 3], (512, 1024, 2048)),
}


@pytest.mark.parametrize("name", list(RESNETS))
def test_resnet_backbones_of_the_configs(tiny_cfg, name):
    cfg = tiny_cfg("experiment=neon_retinanet", f"model/backbone={name}",
                   "model.detector.backbone.weights=null")
    assert cfg.model.detector.backbone.depth == int(name[6:])
    backbone = instantiate(cfg.model.detector.backbone)
    blocks, channels = RESNETS[name]
    assert [len(stage) for stage in backbone.stages[1:]] == blocks
    assert backbone.out_channels == channels
    feats = backbone(torch.rand(1, 3, 64, 96))
    assert [tuple(f.shape[1:]) for f in feats] == [(c, 64 // s, 96 // s)
                                                    for c, s in zip(channels, (8, 16, 32))]


def test_a_detector_on_resnet34(tiny_cfg):
    cfg = tiny_cfg("experiment=neon_retinanet", "model/backbone=resnet34",
                   "model.detector.backbone.weights=null")
    cfg.model.detector.head.num_classes = 2
    detector = instantiate(cfg.model.detector)
    # 256 x 192: P7 is 2 x 2 (GroupNorm(32) of 32 channels needs more than one value per group)
    cls, box = detector(torch.rand(1, 3, 256, 192))
    a = 3  # neon_retinanet: 3 scales per octave, one ratio
    # P3-P5 at strides 8-32, P6 and P7 by stride-2 convs: 192 px -> 24, 12, 6, 3, 2 wide
    assert [tuple(c.shape) for c in cls] == [(1, a * 2, h, w) for h, w in
                                             ((32, 24), (16, 12), (8, 6), (4, 3), (2, 2))]
    assert [b.shape[1] for b in box] == [a * 4] * 5
