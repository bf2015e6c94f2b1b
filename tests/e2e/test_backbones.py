"""A few training steps with a backbone of each family (random weights, tiny input): the
configs under retina/conf/model/backbone/ build, train and validate."""

import math

import pytest

from retina.training.run import train

SHORT = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
         "trainer.check_val_every_n_epoch=1", "callbacks.lr_monitor=null",
         "callbacks.model_checkpoint=null", "callbacks.last_checkpoint=null"]

# config -> overrides for the smallest model of the family
FAMILIES = {
    "resnext50_32x4d": [],
    "mobilenet_v3_large": ["model.detector.backbone.arch=mobilenet_v3_small"],
    "efficientnet_b0": [],
    "regnet_x_1_6gf": ["model.detector.backbone.arch=regnet_x_400mf"],
    "convnext_tiny": [],
    "timm": ["model.detector.backbone.name=test_efficientnet"],
}


@pytest.mark.parametrize("backbone", FAMILIES)
def test_a_few_steps_with_each_backbone_family(tiny_cfg, backbone):
    if backbone == "timm":
        pytest.importorskip("timm")
    cfg = tiny_cfg(f"model/backbone={backbone}", "model.detector.backbone.weights=null",
                   *FAMILIES[backbone], *SHORT)
    metrics = train(cfg)
    assert metrics["global_step"] == 2 and not metrics["stopped_early"]
    assert math.isfinite(metrics["val/mAP"])
