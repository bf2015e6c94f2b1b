"""LightningDataModule over two COCO-format splits (train / val)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from retina.data.coco import CocoDetection
from retina.data.collate import SIZE_DIVISIBLE, collate
from retina.data.transforms import eval_transforms, train_transforms

log = logging.getLogger(__name__)


def coco_paths(root: str | Path) -> dict[str, Path]:
    """Paths of the COCO 2017 layout under ``root``.

    Args:
        root: Folder holding ``annotations/``, ``train2017/`` and ``val2017/``.

    Returns:
        ``train_ann``, ``train_images``, ``val_ann``, ``val_images``, ready to be passed
        as keyword arguments of `DetectionDataModule`.
    """
    root = Path(root)
    return {
        "train_ann": root / "annotations" / "instances_train2017.json",
        "train_images": root / "train2017",
        "val_ann": root / "annotations" / "instances_val2017.json",
        "val_images": root / "val2017",
    }


def class_frequency_weights(counts: list[int] | np.ndarray, mode: str) -> list[float]:
    """Per-class weights from annotation counts n_c, with f_c = n_c / sum(n) the share.

    - ``inverse``: 1 / f_c normalised to mean 1 (n_c floored at 1, so a class without
      annotations gets the largest weight instead of an infinite one).
    - ``log``: 1 / ln(1.1 + f_c), in [1 / ln 2.1, 1 / ln 1.1] = [1.35, 10.5], not normalised.

    Args:
        counts: (K,) annotations per class.
        mode: "inverse" | "log".

    Returns:
        K floats.
    """
    n = np.asarray(counts, np.float64)
    if mode == "inverse":
        inv = 1.0 / np.maximum(n, 1.0)
        return (inv / inv.mean()).tolist()
    if mode == "log":
        return (1.0 / np.log(1.1 + n / max(n.sum(), 1.0))).tolist()
    raise ValueError(f"loss.class_weights must be null, inverse or log, got {mode!r}")


class DetectionDataModule(L.LightningDataModule):
    """Train / val COCO-format detection data with resize, flips and padded batches.

    Batches are the dicts of `retina.data.collate.collate`.

    Args:
        train_ann: COCO JSON of the training split.
        train_images: Image folder of the training split.
        val_ann: COCO JSON of the validation split.
        val_images: Image folder of the validation split.
        batch_size: Training batch size.
        num_workers: DataLoader worker processes (None or 0: load in the calling process;
            a training run chooses them, see `retina.training.cpu_budget`).
        size: Fixed square input side (see `retina.data.transforms`).
        min_size: Short side of the input.
        max_size: Cap of the long side of the input.
        hflip: Horizontal flip probability (training).
        vflip: Vertical flip probability (training).
        photometric: Colour jitter (training).
        rot90: Probability of a quarter turn (training; aerial and microscopy images).
        size_divisible: Padded batch sides are multiples of this (None: the default,
            ``retina.data.collate.SIZE_DIVISIBLE``).
        prepare: Called by `prepare_data` (once per node) to download/prepare the data,
            e.g. ``functools.partial(prepare_neon, root=...)``.
        pin_memory: Defaults to ``torch.cuda.is_available()``.
        persistent_workers: Keep workers between epochs (only when ``num_workers > 0``).
        val_batch_size: Validation batch size, defaults to ``batch_size``.
        scale_jitter: Optional ``(low, high)`` multi-scale factor range (training).
        root: COCO 2017 layout folder; fills in whichever of the four paths is not given.
        skip_bad: Skip and count bad images and annotations instead of raising (see
            `CocoDetection`).
        resize: ``"antialias"`` (the uint8 image, antialiased) or ``"rcnn"`` (torchvision's
            detection-model resize), see `retina.data.transforms`.
        val_split: What the validation data is called in the message about an empty
            validation split (converted VOC/YOLO data: the split and its root; None: the
            annotation file and image folder).
        cache_dir: Where set-up remembers the images that decoded (see `CocoDetection`);
            None: every image is decoded at every set-up.
    """

    def __init__(
        self,
        train_ann: str | Path | None = None,
        train_images: str | Path | None = None,
        val_ann: str | Path | None = None,
        val_images: str | Path | None = None,
        batch_size: int = 4,
        num_workers: int | None = None,
        size: int | None = None,
        min_size: int | None = None,
        max_size: int | None = None,
        hflip: float = 0.5,
        vflip: float = 0.0,
        photometric: bool = False,
        rot90: float = 0.0,
        size_divisible: int | None = SIZE_DIVISIBLE,
        prepare: Callable[[], object] | None = None,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        val_batch_size: int | None = None,
        scale_jitter: tuple[float, float] | None = None,
        root: str | Path | None = None,
        skip_bad: bool = False,
        resize: str = "antialias",
        val_split: str | None = None,
        cache_dir: str | Path | None = None,
    ) -> None:
        super().__init__()
        # plain tuples, so checkpoints stay loadable with torch.load(weights_only=True)
        scale_jitter = tuple(scale_jitter) if scale_jitter is not None else None
        self.save_hyperparameters(ignore=["prepare"])
        given = {"train_ann": train_ann, "train_images": train_images, "val_ann": val_ann,
                 "val_images": val_images}
        paths = {**(coco_paths(root) if root else {}), **{k: v for k, v in given.items() if v}}
        missing = [k for k in given if k not in paths]
        if missing:
            raise ValueError(
                f"data: set data.root (COCO 2017 layout) or data.{', data.'.join(missing)}"
            )
        self.train_ann, self.train_images = Path(paths["train_ann"]), Path(paths["train_images"])
        self.val_ann, self.val_images = Path(paths["val_ann"]), Path(paths["val_images"])
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = num_workers or 0
        self.prepare = prepare
        self.skip_bad = skip_bad
        self.cache_dir = cache_dir
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.persistent_workers = persistent_workers and self.num_workers > 0
        self.collate_fn = functools.partial(collate,
                                            size_divisible=size_divisible or SIZE_DIVISIBLE)
        self.train_tf = train_transforms(
            size, min_size, max_size, hflip, vflip, photometric, scale_jitter, rot90, resize
        )
        self.eval_tf = eval_transforms(size, min_size, max_size, resize)
        self.train_dataset: CocoDetection | None = None
        self.val_dataset: CocoDetection | None = None
        self.val_split = val_split
        self.no_validation: str | None = None  # why there are no validation numbers

    def prepare_data(self) -> None:
        """Run the ``prepare`` hook, if any (Lightning calls this on one process per node)."""
        if self.prepare is not None:
            self.prepare()

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets needed by ``stage`` and check that their categories agree.

        Raises:
            ValueError: If train and val have different categories.
        """
        if stage in (None, "fit") and self.train_dataset is None:
            self.train_dataset = CocoDetection(
                self.train_ann, self.train_images, self.train_tf, self.skip_bad, self.cache_dir
            )
        if self.val_dataset is None:
            self.val_dataset = CocoDetection(
                self.val_ann, self.val_images, self.eval_tf, self.skip_bad, self.cache_dir
            )
            self.no_validation = self._empty_validation()
        train, val = self.train_dataset, self.val_dataset
        same = train is None or (
            train.cat_ids == val.cat_ids and train.class_names == val.class_names
        )
        if not same:
            raise ValueError(
                f"train and val categories differ: {train.ann_file} has "
                f"{dict(zip(train.cat_ids, train.class_names))}, {val.ann_file} has "
                f"{dict(zip(val.cat_ids, val.class_names))}"
            )

    def _empty_validation(self) -> str | None:
        """Why the validation split gives no numbers (no images, or no boxes), logged as a
        warning naming the option to change; None when it has both."""
        val = self.val_dataset
        missing = "images" if len(val) == 0 else "boxes" if len(val._boxes) == 0 else None
        if missing is None:
            return None
        split, option = ((self.val_split, "data.val_split=SPLIT") if self.val_split else
                         (f"{self.val_ann} ({self.val_images})",
                          "data.val_ann=FILE data.val_images=DIR"))
        why = f"the validation split {split} has no {missing}"
        log.warning("%s: this run will have no validation numbers (no val/mAP, no best.ckpt). "
                    "Name the validation data with %s", why, option)
        return why

    @property
    def _reference(self) -> CocoDetection:
        # Not `a or b`: a Dataset with __len__ 0 is falsy.
        dataset = self.train_dataset if self.train_dataset is not None else self.val_dataset
        if dataset is None:
            raise RuntimeError("call setup() before reading the classes of the datamodule")
        return dataset

    @property
    def class_names(self) -> list[str]:
        """Name of each label ``0..K-1``."""
        return self._reference.class_names

    @property
    def cat_ids(self) -> list[int]:
        """COCO category id of each label ``0..K-1``."""
        return self._reference.cat_ids

    @property
    def num_classes(self) -> int:
        """Number of classes K."""
        return self._reference.num_classes

    def class_counts(self) -> list[int]:
        """Training boxes per label ``0..K-1`` (crowd and degenerate boxes left out)."""
        if self.train_dataset is None:
            raise RuntimeError("call setup('fit') before asking for the class counts")
        labels = self.train_dataset._labels  # (A,) of the kept training boxes
        return np.bincount(labels, minlength=self.num_classes).tolist()

    def class_weights(self, mode: str) -> list[float]:
        """Per-class weights from the training annotations, see `class_frequency_weights`."""
        return class_frequency_weights(self.class_counts(), mode)

    def _loader(self, dataset: CocoDetection | None, batch_size: int, shuffle: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError("call setup() before asking for a dataloader")
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            drop_last=False,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            collate_fn=self.collate_fn,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches."""
        return self._loader(self.train_dataset, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Validation batches in dataset order."""
        return self._loader(self.val_dataset, self.val_batch_size, shuffle=False)
