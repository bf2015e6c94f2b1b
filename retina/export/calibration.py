"""The images an INT8 export calibrates on, as the graph receives them.

Static quantization fixes each activation's 8-bit range from the values it takes on a
few representative images. They must reach the network as they will at inference: uint8
images resized to the graph's input size by torchvision's uint8 resize, which is what
``GraphPredictor`` feeds every graph (``retina.infer.runtimes``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torchvision.transforms.v2 import functional as TF

from retina.data.coco import read_rgb

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")


@dataclass(frozen=True)
class Calibration:
    """Calibration images: any size, resized to the graph's input."""

    images: tuple[Path, ...]

    @classmethod
    def from_folder(cls, folder: str | Path, num: int = 32) -> Calibration:
        """``num`` images of ``folder``, evenly spaced over its sorted files (all of them
        if it holds fewer).

        Raises:
            FileNotFoundError: no such folder.
            ValueError: no image in it (the message names the option).
        """
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"calib={folder}: no such folder")
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"calib={folder}: no images in it ({', '.join(IMAGE_SUFFIXES)})")
        picks = np.linspace(0, len(files) - 1, min(num, len(files))).round().astype(int)
        return cls(tuple(files[i] for i in sorted(set(picks.tolist()))))

    def __len__(self) -> int:
        return len(self.images)

    def batches(self, input_size: tuple[int, int]) -> Iterator[np.ndarray]:
        """One (1, 3, h, w) uint8 array per image, resized to ``input_size`` = (h, w)."""
        for path in self.images:
            image = TF.resize(read_rgb(path), list(input_size), antialias=True)  # (3, h, w)
            yield image[None].numpy()
