"""retina.training.module: parameter groups, the optimizer set-up and what validation logs
per class (validation runs are in e2e/)."""

import pytest
import torch
from torch import nn

from retina.training.module import (
    MAX_LOGGED_CLASSES,
    CocoDetectionTask,
    logged_class_ap,
    param_groups,
)


def test_no_decay_norm_bias_puts_1d_parameters_in_a_group_without_decay():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4), nn.Conv2d(4, 2, 1))
    model[2].weight.requires_grad_(False)  # frozen parameters are left out of both
    decay, no_decay = param_groups(model, weight_decay=1e-4, no_decay_norm_bias=True)
    assert [p.shape for p in decay["params"]] == [torch.Size([4, 3, 3, 3])]
    assert sorted(p.numel() for p in no_decay["params"]) == [2, 4, 4, 4]  # biases, norm
    assert no_decay["weight_decay"] == 0.0 and "weight_decay" not in decay
    (only,) = param_groups(model, weight_decay=1e-4, no_decay_norm_bias=False)
    assert len(only["params"]) == 5  # every trainable parameter, the optimizer's decay


def test_per_class_ap_is_logged_for_the_first_classes_with_boxes():
    class_ap = {f"c{i}": (-1.0 if i % 3 == 0 else i / 100) for i in range(40)}
    logged = logged_class_ap(class_ap)
    # c0, c3, c6, ... have no validation boxes: the first 20 others are c1, c2, c4, ..., c29
    assert MAX_LOGGED_CLASSES == 20 and len(logged) == 20
    assert list(logged)[:3] == ["val/AP/c1", "val/AP/c2", "val/AP/c4"]
    assert list(logged)[-1] == "val/AP/c29" and logged["val/AP/c29"] == 0.29
    assert logged_class_ap({"Tree": 0.5, "Shrub": -1.0}, limit=1) == {"val/AP/Tree": 0.5}


def test_an_unknown_eval_backend_names_the_config_key():
    assert CocoDetectionTask(None, None, False, [1], "pycocotools").eval_backend == "pycocotools"
    with pytest.raises(ValueError, match="model.eval_backend must be one of faster-coco-eval, "
                                         "pycocotools, got 'cocoapi'"):
        CocoDetectionTask(None, None, False, [1], "cocoapi")
