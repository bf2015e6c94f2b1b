"""Large images (scenes) read one window at a time, with their georeference if they have one.

:func:`open_scene` takes a file or a ``(3, H, W)`` uint8 tensor. GeoTIFF and other TIFF
files are read with ``rasterio`` when it is installed (``pip install 'retina-det[geo]'``):
windowed reads, so the scene is never in memory whole, and the affine transform and CRS
that map pixels to map coordinates. Without rasterio, and for PNG / JPEG, PIL decodes the
image once as 8-bit and windows are cut from it (pixel space only).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from retina.data.coco import rgb_array
from retina.data.tile import Window, no_pixel_limit

log = logging.getLogger(__name__)

RASTERIO_SUFFIXES = (".tif", ".tiff", ".vrt")
# pixel (col, row) -> map (x, y): x = a * col + b * row + c, y = d * col + e * row + f
Affine = tuple[float, float, float, float, float, float]


class Scene:
    """A large image read by windows.

    Attributes:
        name: what it was opened from (for messages).
        width: pixels.
        height: pixels.
        transform: pixel -> map coefficients ``(a, b, c, d, e, f)`` (pixel corners, as
            GDAL and rasterio), or None in pixel space.
        crs: the map's coordinate reference system (``"EPSG:32617"`` or WKT), or None.
    """

    name: str = "scene"
    width: int = 0
    height: int = 0
    transform: Affine | None = None
    crs: str | None = None

    def read(self, window: Window) -> Tensor:
        """(3, y1 - y0, x1 - x0) uint8 RGB pixels of ``window`` = (x0, y0, x1, y1)."""
        raise NotImplementedError

    def overview(self, height: int, width: int) -> Tensor:
        """(3, height, width) uint8: the whole scene resized (antialiased bilinear)."""
        whole = self.read((0, 0, self.width, self.height))
        return TF.resize(whole, [height, width], antialias=True)

    def close(self) -> None:
        """Release the file."""

    def __enter__(self) -> Scene:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class TensorScene(Scene):
    """A scene already in memory, (3, H, W) uint8."""

    def __init__(self, image: Tensor, name: str = "tensor") -> None:
        if not (image.dtype == torch.uint8 and image.ndim == 3 and image.shape[0] == 3):
            raise ValueError(f"{name}: expected a uint8 RGB tensor (3, H, W), got "
                             f"{image.dtype} {tuple(image.shape)}")
        self.image, self.name = image, name
        self.height, self.width = image.shape[-2:]

    def read(self, window: Window) -> Tensor:
        x0, y0, x1, y1 = window
        return self.image[:, y0:y1, x0:x1]


class PILScene(Scene):
    """An image file decoded once by PIL (8-bit, in PIL's memory), cut into windows."""

    def __init__(self, path: str | Path) -> None:
        self.name = str(path)
        with no_pixel_limit():
            self.image = Image.open(path)
            self.image.load()
        self.width, self.height = self.image.size

    def read(self, window: Window) -> Tensor:
        rgb = rgb_array(self.image.crop(window))  # (h, w, 3)
        return torch.from_numpy(rgb).permute(2, 0, 1)  # (3, h, w)

    def overview(self, height: int, width: int) -> Tensor:
        """PIL's antialiased bilinear resize (no second copy of the scene)."""
        small = self.image.resize((width, height), Image.Resampling.BILINEAR)
        return torch.from_numpy(rgb_array(small)).permute(2, 0, 1)  # (3, h, w)

    def close(self) -> None:
        self.image.close()


def _to_uint8(bands: np.ndarray, name: str) -> np.ndarray:
    """(C, h, w) raster bands -> (3, h, w) uint8: 16-bit scaled as :func:`rgb_array` does,
    one or two bands (gray, gray + alpha) repeated, bands beyond the third dropped."""
    if bands.dtype == np.uint16:
        bands = np.clip(np.rint(bands * (255 / 65535)), 0, 255).astype(np.uint8)
    elif bands.dtype != np.uint8:
        raise ValueError(f"{name}: bands are {bands.dtype}; scenes are read as 8-bit or "
                         "16-bit RGB (or gray)")
    return np.repeat(bands[:1], 3, axis=0) if len(bands) < 3 else bands[:3]


class RasterioScene(Scene):
    """A raster file read by windows with rasterio, with its transform and CRS.

    GDAL's block cache is held to ``cache_mb`` while the scene is open (its default, 5 %
    of the RAM, would keep every block read, i.e. the whole scene, in memory; 32 MB holds
    the blocks that the next row of windows reads again).
    """

    def __init__(self, path: str | Path, cache_mb: int = 32) -> None:
        import rasterio
        from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

        self.name = str(path)
        self.env = rasterio.Env(GDAL_CACHEMAX=cache_mb * 2**20)  # bytes, through rasterio
        self.env.__enter__()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            try:
                self.src = rasterio.open(path)
            except RasterioIOError as err:
                self.env.__exit__(None, None, None)
                raise ValueError(f"{path}: not a raster rasterio can read ({err})") from None
        self.width, self.height = self.src.width, self.src.height
        self.bands = [1, 2, 3] if self.src.count >= 3 else [1]
        if self.src.crs is not None:
            self.transform = tuple(self.src.transform)[:6]
            self.crs = self.src.crs.to_string()

    def read(self, window: Window) -> Tensor:
        from rasterio.windows import Window as RioWindow

        x0, y0, x1, y1 = window
        bands = self.src.read(self.bands, window=RioWindow(x0, y0, x1 - x0, y1 - y0))
        return torch.from_numpy(np.ascontiguousarray(_to_uint8(bands, self.name)))  # (3, h, w)

    def overview(self, height: int, width: int) -> Tensor:
        """A decimated read (GDAL's average of each output pixel's source pixels, from the
        file's overviews when it has them): the scene is never read whole."""
        from rasterio.enums import Resampling

        bands = self.src.read(self.bands, out_shape=(len(self.bands), height, width),
                              resampling=Resampling.average)
        return torch.from_numpy(np.ascontiguousarray(_to_uint8(bands, self.name)))

    def close(self) -> None:
        self.src.close()
        self.env.__exit__(None, None, None)


def has_rasterio() -> bool:
    try:
        import rasterio  # noqa: F401
    except ImportError:
        return False
    return True


def georeference(path: str | Path) -> tuple[Affine, str | None] | None:
    """``(transform, crs)`` of a georeferenced raster file, None in pixel space (or
    without rasterio)."""
    if Path(path).suffix.lower() not in RASTERIO_SUFFIXES or not has_rasterio():
        return None
    try:
        with RasterioScene(path) as scene:
            return (scene.transform, scene.crs) if scene.transform else None
    except ValueError:
        return None


def open_scene(source: str | Path | Tensor) -> Scene:
    """A scene from a file (rasterio for TIFF when installed, else PIL) or a uint8 tensor.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not an image (the message names the file).
    """
    if isinstance(source, Tensor):
        return TensorScene(source)
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"scene not found: {path}")
    if path.suffix.lower() in RASTERIO_SUFFIXES:
        if has_rasterio():
            return RasterioScene(path)
        log.info("%s: rasterio is not installed, reading it in pixel space (no GeoJSON); "
                 "pip install 'retina-det[geo]' for map coordinates", path)
    try:
        return PILScene(path)
    except (OSError, ValueError, SyntaxError) as err:  # PIL's errors for a non-image
        raise ValueError(f"{path}: not a readable image ({err})") from None
