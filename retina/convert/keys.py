"""State-dict names between another library's detector and retina's ``Detector``.

A conversion is a table ``{foreign prefix: retina prefix}`` (``"backbone.body.layer1."`` ->
``"backbone.stages.1."``): every key takes the longest prefix of the table that starts it.
The same table read backwards converts the other way. Nothing is dropped on the way: a key
no prefix starts, a tensor the Detector lacks or lacks from the file, or another shape is a
:class:`ConversionError` that lists them all.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

# BatchNorm2d's counter of training batches: it plays no part in inference, and retina's
# FrozenBatchNorm2d has none (torchvision's own FrozenBatchNorm2d drops it the same way).
BN_COUNTER = "num_batches_tracked"


class ConversionError(ValueError):
    """A state dict that does not fit the model it is converted to."""


def read_state_dict(path: str | Path) -> tuple[dict[str, Tensor], dict]:
    """A foreign checkpoint's tensors and the rest of the file, read with ``weights_only=True``.

    Accepts a bare state dict and the dicts mmdetection (``state_dict``, ``meta``) and
    other trainers (``model``) save.

    Returns:
        ``(state_dict, extra)``: the tensors by name, and the file's other entries (``meta``
        and the like; empty for a bare state dict).

    Raises:
        FileNotFoundError: no such file.
        ConversionError: not a PyTorch file that holds only tensors and plain values.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle and zip errors of every kind
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        why = next((ln for ln in lines if "Unpickler error" in ln), lines[0] if lines else "")
        raise ConversionError(
            f"{path} cannot be read with torch.load(weights_only=True), which loads tensors and "
            f"plain values only ({why}). If you trust the file, keep its weights only: "
            f"torch.save(torch.load(FILE, weights_only=False)['state_dict'], 'weights.pth')"
        ) from None
    if not isinstance(data, dict):
        raise ConversionError(f"{path} holds a {type(data).__name__}, not a state dict")
    for key in ("state_dict", "model"):
        if isinstance(data.get(key), dict):
            return dict(data[key]), {k: v for k, v in data.items() if k != key}
    return dict(data), {}


def resnet_prefixes(root: str) -> dict[str, str]:
    """A torchvision-named ResNet under ``root`` (``conv1``, ``bn1``, ``layer1..4``) ->
    retina's ``Backbone`` (stem ``stages.0``, layers ``stages.1..4``)."""
    table = {f"{root}conv1.": "backbone.stages.0.0.", f"{root}bn1.": "backbone.stages.0.1."}
    table.update({f"{root}layer{i}.": f"backbone.stages.{i}." for i in range(1, 5)})
    return table


def subnet_prefixes(subnet: nn.Sequential, ours: str, conv: str, norm: str) -> dict[str, str]:
    """The n-th conv and norm of a retina head subnet (``ours`` is its prefix) named by the
    templates ``conv`` and ``norm`` with ``{i}`` = n (e.g. ``"bbox_head.cls_convs.{i}.gn."``)."""
    table = {}
    for kind, template in ((nn.Conv2d, conv), (nn.GroupNorm, norm)):
        places = [j for j, m in enumerate(subnet) if isinstance(m, kind)]
        table.update({template.format(i=n): f"{ours}{j}." for n, j in enumerate(places)})
    return table


def invert(table: dict[str, str]) -> dict[str, str]:
    """The table the other way round."""
    return {ours: theirs for theirs, ours in table.items()}


def rename(state: dict[str, Tensor], table: dict[str, str]) -> tuple[dict[str, Tensor], list[str]]:
    """Keys renamed by their longest prefix in ``table``; the keys no prefix starts."""
    by_length = sorted(table, key=len, reverse=True)
    out, unmapped = {}, []
    for key, value in state.items():
        prefix = next((p for p in by_length if key.startswith(p)), None)
        if prefix is None:
            unmapped.append(key)
        else:
            out[table[prefix] + key[len(prefix):]] = value
    return out, unmapped


def without_bn_counters(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """``state`` without BatchNorm's ``num_batches_tracked`` counters (see :data:`BN_COUNTER`)."""
    return {k: v for k, v in state.items() if k.rsplit(".", 1)[-1] != BN_COUNTER}


def check_fits(mapped: dict[str, Tensor], unmapped: list[str], target: dict[str, Tensor],
               what: str) -> None:
    """Raise a :class:`ConversionError` unless ``mapped`` has exactly the keys and shapes of
    ``target`` and nothing was left unmapped; ``what`` names the conversion in the message."""
    missing = [k for k in target if k not in mapped]
    unexpected = [k for k in mapped if k not in target]
    shapes = [f"{k}: {tuple(v.shape)} for {tuple(target[k].shape)}" for k, v in mapped.items()
              if k in target and v.shape != target[k].shape]
    problems = [f"{name} ({len(keys)}): {keys}" for name, keys in (
        ("keys no rule maps", unmapped), ("tensors the file lacks", missing),
        ("tensors the model lacks", unexpected), ("other shapes", shapes)) if keys]
    if problems:
        raise ConversionError(f"{what}: the weights do not fit; " + "; ".join(problems))


def convert_state(state: dict[str, Tensor], table: dict[str, str], target: dict[str, Tensor],
                  what: str) -> dict[str, Tensor]:
    """``state`` renamed by ``table`` and checked against ``target`` (see :func:`check_fits`),
    BatchNorm counters left out."""
    mapped, unmapped = rename(without_bn_counters(state), table)
    check_fits(mapped, unmapped, target, what)
    return mapped
