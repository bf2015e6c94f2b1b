"""retina.training.run.build: the head and the criterion take what they need from the data
and the loss (training runs are in e2e/)."""

import json
import math
import os

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import open_dict

from retina.training.run import build, resolve_ckpt


def test_class_weights_from_the_training_annotations_reach_the_checkpointed_criterion(tiny_cfg):
    cfg = tiny_cfg("experiment=neon_retinanet", "loss=softmax_focal", "loss.class_weights=log",
                   "model.detector.backbone.weights=null")
    datamodule, module = build(cfg)
    (n,) = datamodule.class_counts()  # one class: share 1
    assert n == len(datamodule.train_dataset._labels) > 500
    torch.testing.assert_close(module.criterion.class_weights, torch.tensor([1 / math.log(2.1)]))
    assert "criterion.class_weights" in module.state_dict()
    run = json.loads(module.hparams.run_config)
    assert run["loss"]["class_weights"] == pytest.approx([1 / math.log(2.1)])


def test_the_softmax_loss_gives_the_head_its_background_channel(tiny_cfg):
    cfg = tiny_cfg("experiment=neon_retinanet", "loss=softmax_focal",
                   "model.detector.backbone.weights=null")
    _, module = build(cfg)
    head = module.detector.head
    assert head.background_class and head.cls_channels == module.num_classes + 1
    assert not build(tiny_cfg("experiment=neon_retinanet"))[1].detector.head.background_class
    # a module put together by hand with a sigmoid head: a clear error
    with open_dict(cfg):
        cfg.model.detector.head.num_classes = 1
        cfg.model.detector.head.background_class = False
    with pytest.raises(Exception, match="SoftmaxFocalCriterion needs a head with a background channel"):
        instantiate(cfg.model)


def test_resume_paths_that_do_not_exist_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="ckpt_path=.*gone.ckpt: no such checkpoint"):
        resolve_ckpt(str(tmp_path / "gone.ckpt"), str(tmp_path), "train")
    with pytest.raises(FileNotFoundError, match=f"ckpt_path=last: no last.ckpt under {tmp_path}"):
        resolve_ckpt("last", str(tmp_path), "train")
    older, newer = (tmp_path / "train" / d / "checkpoints" / "last.ckpt" for d in ("a", "b"))
    for i, path in enumerate((older, newer)):
        path.parent.mkdir(parents=True)
        path.write_bytes(b"x")
        os.utime(path, (1000 + i, 1000 + i))
    assert resolve_ckpt("last", str(tmp_path), "train") == str(newer)
    assert resolve_ckpt(None, str(tmp_path), "train") is None


def test_eval_data_replaces_or_changes_the_checkpoints_own():
    from omegaconf import OmegaConf

    from retina.training.run import eval_data

    trained = OmegaConf.create({"_target_": "D", "root": None, "min_size": 320, "resize": "rcnn"})
    assert eval_data(None, trained) is trained
    whole = OmegaConf.create({"_target_": "E", "root": "/coco"})
    assert eval_data(whole, trained) is whole  # data=coco data.root=...: the data config given
    changed = eval_data(OmegaConf.create({"root": "/coco"}), trained)  # +data.root=...
    assert OmegaConf.to_container(changed) == {"_target_": "D", "root": "/coco", "min_size": 320,
                                               "resize": "rcnn"}
