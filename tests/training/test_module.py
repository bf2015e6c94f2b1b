"""retina.training.module: parameter groups and the optimizer set-up."""

import torch
from torch import nn

from retina.training.module import param_groups


def test_no_decay_norm_bias_puts_1d_parameters_in_a_group_without_decay():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4), nn.Conv2d(4, 2, 1))
    model[2].weight.requires_grad_(False)  # frozen parameters are left out of both
    decay, no_decay = param_groups(model, weight_decay=1e-4, no_decay_norm_bias=True)
    assert [p.shape for p in decay["params"]] == [torch.Size([4, 3, 3, 3])]
    assert sorted(p.numel() for p in no_decay["params"]) == [2, 4, 4, 4]  # biases, norm
    assert no_decay["weight_decay"] == 0.0 and "weight_decay" not in decay
    (only,) = param_groups(model, weight_decay=1e-4, no_decay_norm_bias=False)
    assert len(only["params"]) == 5  # every trainable parameter, the optimizer's decay
