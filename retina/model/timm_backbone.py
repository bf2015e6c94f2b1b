"""timm's catalogue as C3-C5 (``pip install "retina-det[timm]"``): any model timm builds with
``features_only=True`` that has stride-8, 16 and 32 outputs.

Weights: ``None`` (random init), ``"pretrained"`` (timm's default weights of the model, from
the Hugging Face cache or downloaded), ``"pretrained:TAG"`` (a tag of timm's, e.g.
``"pretrained:a1_in1k"``) or a path to a local file of the classifier's weights (timm's
``pretrained_cfg_overlay={"file": ...}``; no network).
"""

from __future__ import annotations

import os
from pathlib import Path

from torch import Tensor, nn

from retina.model.backbone import LEVEL_STRIDES

PRETRAINED = "pretrained"
INSTALL = 'pip install "retina-det[timm]"'


def _timm():
    try:
        import timm
    except ImportError as err:
        raise ImportError(f"model/backbone=timm needs timm: {INSTALL}") from err
    return timm


def is_file_spec(weights: str) -> bool:
    return os.path.sep in weights or weights.endswith((".pth", ".pt", ".bin", ".safetensors"))


def _create(name: str, weights: str | None) -> nn.Module:
    """``timm.create_model(name, features_only=True)`` with ``weights`` (see the module)."""
    timm = _timm()
    if not timm.is_model(name):
        import difflib

        close = difflib.get_close_matches(name, timm.list_models(), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ValueError(f"timm has no model {name!r}{hint}")
    spec = None if weights is None or str(weights).lower() in ("", "none", "null") else str(weights)
    if spec is None:
        return timm.create_model(name, features_only=True, pretrained=False)
    if is_file_spec(spec):
        if not Path(spec).is_file():
            raise FileNotFoundError(f"backbone weights file not found: {spec}")
        return timm.create_model(name, features_only=True, pretrained=True,
                                 pretrained_cfg_overlay={"file": str(spec)})
    if spec != PRETRAINED and not spec.startswith(PRETRAINED + ":"):
        raise ValueError(f"timm backbone weights={spec!r}: expected null, {PRETRAINED}, "
                         f"{PRETRAINED}:TAG or a local file path")
    tag = spec.partition(":")[2]
    full = f"{name}.{tag}" if tag else name
    try:
        return timm.create_model(full, features_only=True, pretrained=True)
    except Exception as err:  # offline: huggingface_hub / urllib errors
        raise RuntimeError(
            f"could not fetch timm weights of {full} ({type(err).__name__}: {err}). Offline? "
            "Put them in the Hugging Face cache (HF_HUB_OFFLINE=1 then reads it) or pass a "
            "local file as weights=/path/to/file") from err


class TimmBackbone(nn.Module):
    """A timm model's stride-8, 16 and 32 features as [C3, C4, C5].

    Args:
        name: timm's model name (``timm.list_models()``), e.g. ``resnet50``,
            ``convnext_nano``, ``efficientnet_b3``.
        weights: see the module docstring.
        frozen_bn: batch norms become frozen ones (timm's ``freeze_batch_norm_2d``).
        freeze_stages: the parameters before the N-th feature level get
            ``requires_grad=False``: N=1 freezes the stem (up to the first feature level,
            stride 2 or 4), N=2 also the first level, as :func:`retina.model.backbone.resnet`.
    """

    def __init__(self, name: str = "resnet50", weights: str | None = None,
                 frozen_bn: bool = True, freeze_stages: int = 1) -> None:
        super().__init__()
        body = _create(name, weights)
        info = body.feature_info
        reductions = info.reduction()
        missing = [s for s in LEVEL_STRIDES if s not in reductions]
        if missing:
            raise ValueError(f"timm model {name} has no stride {missing} features "
                             f"(strides {reductions})")
        if not 0 <= freeze_stages <= len(reductions):
            raise ValueError(f"freeze_stages must be in [0, {len(reductions)}], got "
                             f"{freeze_stages}")
        if frozen_bn:
            body = _timm().layers.freeze_batch_norm_2d(body)
        self.body = body
        self.indices = tuple(reductions.index(s) for s in LEVEL_STRIDES)
        self.out_channels = tuple(info.channels()[i] for i in self.indices)
        self._freeze(info.module_name(), freeze_stages)

    def _freeze(self, modules: list[str], n: int) -> None:
        """Parameters registered before those of the ``n``-th feature module: frozen."""
        if n == 0:
            return
        params = list(self.body.named_parameters())
        if n < len(modules):
            # features_only models name their children "stages_1" where the module is "stages.1"
            prefixes = tuple(f"{p}." for p in (modules[n], modules[n].replace(".", "_")))
            first = next(i for i, (k, _) in enumerate(params) if k.startswith(prefixes))
        else:
            first = len(params)
        for _, p in params[:first]:
            p.requires_grad_(False)

    def forward(self, x: Tensor) -> list[Tensor]:
        """(B, 3, H, W) normalised images -> [C3 (B, c3, H/8, W/8), C4, C5]."""
        feats = self.body(x)
        return [feats[i] for i in self.indices]
