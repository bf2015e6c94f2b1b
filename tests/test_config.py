import inspect

import lightning as L
import pytest
import yaml
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import open_dict

from retina.training.config import CONF_DIR as CONF


def test_trainer_config_lists_every_trainer_argument():
    listed = set(yaml.safe_load((CONF / "trainer" / "default.yaml").read_text())) - {"_target_"}
    params = set(inspect.signature(L.Trainer.__init__).parameters) - {"self", "logger", "callbacks"}
    assert listed == params


def test_any_trainer_flag_from_the_command_line(tiny_cfg):
    cfg = tiny_cfg("trainer.gradient_clip_val=10", "trainer.precision=bf16-mixed", "trainer.max_epochs=3")
    assert cfg.trainer.gradient_clip_val == 10 and cfg.trainer.precision == "bf16-mixed"


def test_unknown_key_names_the_key(tiny_cfg):
    with pytest.raises(ConfigCompositionException, match="max_epoch"):
        tiny_cfg("trainer.max_epoch=3")
    with pytest.raises(ConfigCompositionException, match="gama"):
        tiny_cfg("loss.gama=1.5")


@pytest.mark.parametrize("experiment", ["neon_retinanet", "retinanet_r50_1x"])
def test_experiments_compose_and_build(tiny_cfg, experiment):
    cfg = tiny_cfg(f"experiment={experiment}", "model.detector.backbone.weights=null")
    with open_dict(cfg):
        cfg.model.detector.head.num_classes = 3
    module = instantiate(cfg.model)
    assert module.detector.head.num_classes == 3
    if experiment == "retinanet_r50_1x":
        assert cfg.optim.lr == 0.01 and cfg.data.min_size == 800 and cfg.trainer.max_epochs == 12
        assert module.detector.backbone.out_channels == (512, 1024, 2048)


def test_focal_overrides_reach_the_criterion(tiny_cfg):
    cfg = tiny_cfg(
        "experiment=neon_retinanet", "loss.gamma=1.5", "loss.alpha=0.5",
        "model.detector.backbone.weights=null",
    )
    with open_dict(cfg):
        cfg.model.detector.head.num_classes = 1
    crit = instantiate(cfg.model).criterion
    assert (crit.gamma, crit.alpha) == (1.5, 0.5)


def test_the_head_takes_its_anchor_count_from_the_anchor_generator(tiny_cfg):
    cfg = tiny_cfg(
        "experiment=neon_retinanet", "model.detector.anchors.ratios=[0.5,1.0]",
        "model.detector.backbone.weights=null",
    )
    with open_dict(cfg):
        cfg.model.detector.head.num_classes = 1
    head = instantiate(cfg.model).detector.head
    assert head.num_anchors == 6  # 3 scales per octave x 2 ratios, configured nowhere else
    assert head.cls_pred.out_channels == 6 and head.box_pred.out_channels == 6 * 4
    cfg = tiny_cfg("experiment=neon_gfl", "model.detector.anchors.ratios=[0.5,1.0]",
                   "model.detector.backbone.weights=null")
    with open_dict(cfg):
        cfg.model.detector.head.num_classes = 1
    with pytest.raises(Exception, match="GFL has one anchor per location, the anchors give 2"):
        instantiate(cfg.model)


def test_bad_value_names_the_key(tiny_cfg):
    cfg = tiny_cfg("experiment=neon_retinanet", "loss.gamma=-1")
    with pytest.raises(Exception, match="loss.gamma must be a number >= 0"):
        instantiate(cfg.loss)()  # a partial: the model adds its coder
