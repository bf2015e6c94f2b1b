"""retina.data.scene: windows of the real GeoTIFF OSBS_029 (deepforest wheel) with rasterio,
and the same pixels in pixel space without it; rasters of other kinds; bad input."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import rasterio
import torch
from PIL import Image

from retina.data import scene as scene_module
from retina.data.coco import read_rgb
from retina.data.neon import deepforest_data_dir
from retina.data.scene import PILScene, RasterioScene, TensorScene, georeference, open_scene

OSBS = deepforest_data_dir() / "OSBS_029.tif"


def test_geotiff_windows_and_georeference():
    with open_scene(OSBS) as scene:
        assert isinstance(scene, RasterioScene)
        assert (scene.width, scene.height) == (400, 400)
        assert scene.crs == "EPSG:32617"  # WGS 84 / UTM zone 17N, 10 cm pixels
        assert scene.transform == pytest.approx((0.1, 0.0, 404211.9, 0.0, -0.1, 3285142.9))
        window = scene.read((100, 50, 300, 90))
    assert window.dtype == torch.uint8 and window.shape == (3, 40, 200)
    assert torch.equal(window, read_rgb(OSBS)[:, 50:90, 100:300])  # what PIL decodes
    assert georeference(OSBS) == (scene.transform, "EPSG:32617")


def test_without_rasterio_a_geotiff_is_read_in_pixel_space(monkeypatch, caplog):
    monkeypatch.setattr(scene_module, "has_rasterio", lambda: False)
    with caplog.at_level(logging.INFO, logger="retina.data.scene"), open_scene(OSBS) as scene:
        assert isinstance(scene, PILScene) and scene.transform is None and scene.crs is None
        assert torch.equal(scene.read((0, 0, 400, 400)), read_rgb(OSBS))
    assert "rasterio is not installed" in caplog.text
    assert georeference(OSBS) is None


def write_raster(path, bands: np.ndarray, **profile) -> None:
    meta = {"driver": "GTiff", "count": len(bands), "height": bands.shape[1],
            "width": bands.shape[2], "dtype": bands.dtype.name, **profile}
    with rasterio.open(path, "w", **meta) as dst:
        dst.write(bands)


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_other_rasters_become_8_bit_rgb(tmp_path):
    gray16 = np.arange(60, dtype=np.uint16).reshape(1, 6, 10) * 1000  # (1, H, W)
    write_raster(tmp_path / "gray16.tif", gray16)
    with open_scene(tmp_path / "gray16.tif") as scene:
        out = scene.read((0, 0, 10, 6))
        assert scene.transform is None  # no CRS: pixel space
    expected = torch.from_numpy(np.rint(gray16 * (255 / 65535)).astype(np.uint8)).expand(3, 6, 10)
    assert torch.equal(out, expected)
    rgba = np.random.default_rng(0).integers(0, 256, (4, 5, 7), dtype=np.uint8)
    write_raster(tmp_path / "rgba.tif", rgba)
    with open_scene(tmp_path / "rgba.tif") as scene:
        assert torch.equal(scene.read((0, 0, 7, 5)), torch.from_numpy(rgba[:3]))
    write_raster(tmp_path / "float.tif", np.zeros((3, 4, 4), np.float32))
    with pytest.raises(ValueError, match=r"float\.tif: bands are float32"):
        with open_scene(tmp_path / "float.tif") as scene:
            scene.read((0, 0, 4, 4))


def test_png_scene_and_tensor_scene(tmp_path):
    image = torch.randint(0, 256, (3, 30, 50), dtype=torch.uint8)
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(tmp_path / "s.png")
    with open_scene(tmp_path / "s.png") as scene:
        assert isinstance(scene, PILScene) and (scene.width, scene.height) == (50, 30)
        assert torch.equal(scene.read((10, 5, 40, 25)), image[:, 5:25, 10:40])
    assert torch.equal(open_scene(image).read((10, 5, 40, 25)), image[:, 5:25, 10:40])
    with pytest.raises(ValueError, match=r"tensor: expected a uint8 RGB tensor \(3, H, W\)"):
        TensorScene(image.float())


def test_bad_scene_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="scene not found: .*gone.png"):
        open_scene(tmp_path / "gone.png")
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ValueError, match=r"notes\.png: not a readable image"):
        open_scene(tmp_path / "notes.png")
    (tmp_path / "notes.tif").write_text("not a raster")
    with pytest.raises(ValueError, match=r"notes\.tif: not a raster rasterio can read"):
        open_scene(tmp_path / "notes.tif")
