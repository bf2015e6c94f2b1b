"""retina.convert.keys: renaming by prefix tables, both ways, and errors that list every
key that does not fit."""

import pytest
import torch
from torch import nn

from retina.convert.keys import (
    ConversionError,
    check_fits,
    convert_state,
    invert,
    read_state_dict,
    rename,
    subnet_prefixes,
    without_bn_counters,
)
from retina.model.head import subnet


def test_longest_prefix_wins_and_inverting_goes_back():
    table = {"a.": "x.", "a.b.": "y.", "c.": "z.0."}
    state = {"a.w": torch.zeros(1), "a.b.w": torch.ones(1), "c.d.e": torch.ones(2), "q": torch.ones(3)}
    mapped, unmapped = rename(state, table)
    assert sorted(mapped) == ["x.w", "y.w", "z.0.d.e"] and unmapped == ["q"]
    back, none = rename(mapped, invert(table))
    assert none == [] and sorted(back) == ["a.b.w", "a.w", "c.d.e"]
    assert back["a.b.w"] is state["a.b.w"]


def test_subnet_prefixes_count_convs_and_norms():
    # with GroupNorm: [conv, gn, relu] x 2 -> convs at 0, 3 and norms at 1, 4
    table = subnet_prefixes(subnet(8, 32, 2, True), "head.s.", "conv.{i}.0.", "conv.{i}.1.")
    assert table == {"conv.0.0.": "head.s.0.", "conv.1.0.": "head.s.3.",
                     "conv.0.1.": "head.s.1.", "conv.1.1.": "head.s.4."}
    # without: [conv, relu] x 2 -> convs at 0, 2
    table = subnet_prefixes(subnet(8, 32, 2, False), "head.s.", "c{i}.", "n{i}.")
    assert table == {"c0.": "head.s.0.", "c1.": "head.s.2."}


def test_every_kind_of_misfit_is_listed():
    target = {"x.w": torch.zeros(2), "x.b": torch.zeros(2), "y.w": torch.zeros(3)}
    mapped = {"x.w": torch.zeros(2), "y.w": torch.zeros(4), "z.w": torch.zeros(1)}
    with pytest.raises(ConversionError) as err:
        check_fits(mapped, ["foreign.k"], target, "test file")
    text = str(err.value)
    assert text.startswith("test file: the weights do not fit")
    assert "keys no rule maps (1): ['foreign.k']" in text
    assert "tensors the file lacks (1): ['x.b']" in text
    assert "tensors the model lacks (1): ['z.w']" in text
    assert "other shapes (1): ['y.w: (4,) for (3,)']" in text
    check_fits({k: v.clone() for k, v in target.items()}, [], target, "fits")  # no error


def test_batch_norm_counters_are_the_only_keys_left_out():
    bn = nn.BatchNorm2d(4)
    state = {f"bn.{k}": v for k, v in bn.state_dict().items()}
    assert sorted(without_bn_counters(state)) == ["bn.bias", "bn.running_mean", "bn.running_var",
                                                  "bn.weight"]
    target = {k.replace("bn.", "n."): v for k, v in without_bn_counters(state).items()}
    assert sorted(convert_state(state, {"bn.": "n."}, target, "bn")) == sorted(target)


def test_read_state_dict_takes_bare_and_wrapped_dicts(tmp_path):
    weights = {"a.w": torch.ones(2)}
    for name, data, extra in (("bare", weights, {}),
                              ("mmdet", {"meta": {"CLASSES": ("a",)}, "state_dict": weights},
                               {"meta": {"CLASSES": ("a",)}}),
                              ("model", {"model": weights, "epoch": 3}, {"epoch": 3})):
        torch.save(data, tmp_path / f"{name}.pth")
        state, rest = read_state_dict(tmp_path / f"{name}.pth")
        assert list(state) == ["a.w"] and rest == extra, name


class Custom:  # a pickled class: torch.load(weights_only=True) refuses it
    pass


def test_files_that_are_not_plain_weights_are_refused(tmp_path):
    torch.save({"state_dict": {}, "obj": Custom()}, tmp_path / "code.pth")
    with pytest.raises(ConversionError, match=r"weights_only=True.*Unsupported global.*Custom.*If you trust the file"):
        read_state_dict(tmp_path / "code.pth")
    torch.save([torch.ones(1)], tmp_path / "list.pth")
    with pytest.raises(ConversionError, match="holds a list, not a state dict"):
        read_state_dict(tmp_path / "list.pth")
    with pytest.raises(FileNotFoundError):
        read_state_dict(tmp_path / "missing.pth")
