"""Data pipeline: COCO-format datasets (VOC and YOLO via `retina.data.to_coco`), transforms,
collate, LightningDataModule, NEON prep."""

from retina.data.coco import CocoDetection, load_coco, read_rgb
from retina.data.collate import collate
from retina.data.datamodule import DetectionDataModule, coco_paths
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


def __getattr__(name: str):
    # Imported lazily so that `python -m retina.data.neon` does not find the module
    # already imported by its package (runpy warns about that).
    if name == "prepare_neon":
        from retina.data.neon import prepare_neon

        return prepare_neon
    if name == "windows":  # likewise for `python -m retina.data.tile`
        from retina.data.tile import windows

        return windows
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
