"""retina.training.run.build: the head and the criterion take what they need from the data
and the loss (training runs are in e2e/)."""

import json
import math

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import open_dict

from retina.training.run import build


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


def test_the_model_summary_counts_flops_at_the_training_input_size(tiny_cfg):
    from lightning.pytorch.utilities.model_summary import ModelSummary
    from torch.utils.flop_counter import FlopCounterMode

    # 160 px: one image's P7 is 2x2 (GroupNorm(32) over 32 channels needs 2 values a group)
    _, module = build(tiny_cfg("model.detector.backbone.weights=null", "data.size=160"))
    assert tuple(module.example_input_array.shape) == (1, 3, 160, 160)
    summary = ModelSummary(module, max_depth=1)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module.eval()(torch.zeros(1, 3, 160, 160))
    assert summary.total_flops == counter.get_total_flops() > 10**7
    assert "Total Flops" in str(summary) and summary.flop_counts["detector"]


def test_the_run_summary_leaves_out_the_size_columns(caplog):
    from retina.training.summary import FlopsSummary

    data = [(" ", ["0"]), ("Name", ["detector"]), ("Params", ["9.1 M"]), ("FLOPs", ["18.3 B"]),
            ("In sizes", ["[1, 3, 448, 448]"]), ("Out sizes", ["[[[1, 1, 56, 56], ...]]"])]
    with caplog.at_level("INFO"):
        FlopsSummary.summarize(data, 9_100_000, 9_000_000, 36.5, {"train": 1, "eval": 0},
                               total_flops=18_300_000_000)
    table = caplog.text
    assert "FLOPs" in table and "18.3 B    Total Flops" in table and "In sizes" not in table
