"""Data pipeline: COCO-format datasets (VOC and YOLO via `retina.data.to_coco`), transforms,
collate, LightningDataModule, NEON prep."""

from retina.data.coco import CocoDetection, load_coco, read_rgb
from retina.data.collate import collate
from retina.data.transforms import eval_transforms, train_transforms

__all__ = [
    "CocoDetection",
    "DetectionDataModule",
    "coco_paths",
    "collate",
    "eval_transforms",
    "load_coco",
    "prepare_neon",
    "read_rgb",
    "train_transforms",
    "windows",
]


# Imported when first asked for: the data module imports Lightning (3 s on a 2-core machine),
# which inference and `retina serve` do not need; `python -m retina.data.neon` (or .tile)
# would otherwise find its module already imported by the package (runpy warns about that).
LAZY = {"DetectionDataModule": "retina.data.datamodule", "coco_paths": "retina.data.datamodule",
        "prepare_neon": "retina.data.neon", "windows": "retina.data.tile"}


def __getattr__(name: str):
    if name in LAZY:
        import importlib

        return getattr(importlib.import_module(LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
