"""retina.training.init_from (``model.init_from=FILE``): start from another file's Detector,
strictly checked, with a fresh class predictor for another number of classes."""

import logging
import math

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import open_dict
from safetensors.torch import save_file

from retina.training.checkpoint import module_from_checkpoint
from retina.training.run import run_config_json

RETINANET = ("experiment=neon_retinanet", "model.detector.backbone.weights=null")


def tiny_module(tiny_cfg, num_classes: int, *overrides: str):
    cfg = tiny_cfg(*RETINANET, *overrides)
    with open_dict(cfg):
        cfg.model.detector.head.num_classes = num_classes
    return instantiate(cfg.model, run_config=run_config_json(cfg))


def save_ckpt(module, path):
    k = module.num_classes
    torch.save({"state_dict": module.state_dict(),
                "hyper_parameters": {"class_names": [f"c{i}" for i in range(k)],
                                     "cat_ids": list(range(1, k + 1)),
                                     "run_config": module.hparams.run_config}}, path)
    return path


@pytest.fixture
def source(tiny_cfg, tmp_path):
    """A 3-class tiny RetinaNet with random non-initial weights, saved as a checkpoint."""
    torch.manual_seed(0)
    module = tiny_module(tiny_cfg, 3)
    with torch.no_grad():
        for p in module.detector.parameters():
            p.add_(torch.randn_like(p))
    return module, save_ckpt(module, tmp_path / "source.ckpt")


def test_other_classes_keep_the_prior_and_the_log_says_so(tiny_cfg, source, caplog):
    module, path = source
    with caplog.at_level(logging.INFO, logger="retina.training.init_from"):
        target = tiny_module(tiny_cfg, 1, f"model.init_from={path}")
    theirs, ours = module.detector.state_dict(), target.detector.state_dict()
    cls = {"head.cls_pred.weight", "head.cls_pred.bias"}
    assert all(torch.equal(theirs[k], v) for k, v in ours.items() if k not in cls)
    assert ours["head.cls_pred.weight"].shape[0] == 3  # 3 anchors x 1 class
    # sigmoid(b) = 0.01: b = log(0.01 / 0.99) = -log 99 = -4.5951
    torch.testing.assert_close(ours["head.cls_pred.bias"], torch.full((3,), -math.log(99)))
    assert ours["head.cls_pred.weight"].std() < 0.02  # the N(0, 0.01) initialisation
    assert "re-initialised with the prior (the file predicts 3 classes, this model 1)" in caplog.text
    assert f"{len(ours) - 2} tensors loaded (names and shapes checked)" in caplog.text


def test_same_classes_load_everything(tiny_cfg, source):
    module, path = source
    target = tiny_module(tiny_cfg, 3, f"model.init_from={path}")
    for k, v in target.detector.state_dict().items():
        assert torch.equal(v, module.detector.state_dict()[k]), k


def test_a_safetensors_export_works_too(tiny_cfg, source, tmp_path):
    module, _ = source
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in module.detector.state_dict().items()}, str(path))
    target = tiny_module(tiny_cfg, 2, f"model.init_from={path}")
    assert torch.equal(target.detector.fpn.inner_blocks[0][0].weight,
                       module.detector.fpn.inner_blocks[0][0].weight)


def test_another_architecture_is_an_error_listing_the_tensors(tiny_cfg, source):
    _, path = source
    with pytest.raises(Exception, match=r"does not fit this model: missing \['head.cls_subnet.3"
                                        r".*unexpected \[\], other shapes \[.*head.cls_pred.weight"):
        tiny_module(tiny_cfg, 3, f"model.init_from={path}", "model.detector.head.num_convs=2",
                    "model.detector.head.channels=64")
    with pytest.raises(Exception, match="no such file"):
        tiny_module(tiny_cfg, 3, f"model.init_from={path}.missing")


def test_other_settings_are_named_in_a_warning(tiny_cfg, source, caplog):
    _, path = source
    with caplog.at_level(logging.WARNING, logger="retina.training.init_from"):
        tiny_module(tiny_cfg, 1, f"model.init_from={path}", "model.detector.anchors.offset=0.25")
    assert "anchors.offset: 0.5 in the file, 0.25 here" in caplog.text
    assert "num_classes" not in caplog.text


def test_checkpoints_rebuild_without_the_file_they_started_from(tiny_cfg, source, tmp_path):
    _, path = source
    target = tiny_module(tiny_cfg, 1, f"model.init_from={path}")
    ckpt = save_ckpt(target, tmp_path / "trained.ckpt")
    path.unlink()
    rebuilt = module_from_checkpoint(ckpt)
    for k, v in rebuilt.state_dict().items():
        assert torch.equal(v, target.state_dict()[k]), k
