"""Sliced prediction on real scenes with the session's tiny RetinaNet: the same boxes as the
crops predicted one by one away from seams, every export format, the GeoTIFF OSBS_029 to
GeoJSON and back, an 8000 x 8000 scene in bounded memory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from PIL import Image
from torchvision.ops import box_iou

import retina
from retina.data.coco import read_rgb
from retina.data.neon import deepforest_data_dir
from retina.data.tile import windows
from retina.infer import from_checkpoint
from retina.predict import parse, predict

YELL = "2019_YELL_2_541000_4977000_image_crop.png"  # 1249 x 1035, the validation scene


def test_sliced_gives_the_crops_boxes_away_from_seams(trained_retinanet):
    predictor = from_checkpoint(trained_retinanet.ckpt)
    scene = read_rgb(deepforest_data_dir() / YELL)  # (3, 1035, 1249)
    tile, overlap = 240, 0.25
    det = predictor.predict_large(scene, tile=tile, overlap=overlap, batch_size=3)
    wins = torch.tensor(windows(1249, 1035, tile, overlap), dtype=torch.float32)  # (M, 4)
    compared = 0
    for k, (x0, y0, x1, y1) in enumerate(wins.int().tolist()):
        alone = predictor([scene[:, y0:y1, x0:x1]])[0]
        boxes = alone["boxes"] + torch.tensor([x0, y0, x0, y0])
        # away from seams: no other window sees any of the box
        others = torch.cat([wins[:k], wins[k + 1:]])
        seen = box_iou(boxes, others) > 0
        away = ~seen.any(1)
        if not away.any():
            continue
        iou = box_iou(boxes[away], det["boxes"])  # (n, D)
        best, j = iou.max(1)
        assert (best > 1 - 1e-4).all(), f"window {k}: a crop's box is missing"
        torch.testing.assert_close(det["scores"][j], alone["scores"][away], atol=1e-5, rtol=0)
        torch.testing.assert_close(det["boxes"][j], boxes[away], atol=1e-3, rtol=0)
        compared += int(away.sum())
    print(f"{compared} boxes away from seams compared")
    assert compared > 30
    assert len(det["boxes"]) < 100 * len(wins)  # duplicates in overlaps were merged
    assert (det["boxes"][:, 2:] <= torch.tensor([1249.0, 1035])).all()


@pytest.mark.parametrize("fmt", ["safetensors", "torchscript", "onnx"])
def test_every_format_predicts_a_scene_like_the_checkpoint(fmt, trained_retinanet, exported):
    scene = deepforest_data_dir() / "OSBS_029.tif"  # 400 x 400 GeoTIFF
    ref = from_checkpoint(trained_retinanet.ckpt).predict_large(scene, tile=160)
    det = retina.load(exported[fmt]).predict_large(scene, tile=160, overlap=0.25)
    assert len(ref["boxes"]) > 50 and abs(len(det["boxes"]) - len(ref["boxes"])) <= 2
    best = box_iou(ref["boxes"], det["boxes"]).max(1).values
    assert (best > 0.99).float().mean() > 0.97, fmt


def test_geotiff_to_geojson_round_trips_to_pixel_boxes(exported, tmp_path):
    tif = deepforest_data_dir() / "OSBS_029.tif"
    out = tmp_path / "pred"
    predict(parse([f"model={exported['safetensors']}", f"images={tif}", f"out={out}",
                   "tile=160", "progress=false", "conf=0.005"]))
    geo = json.loads((out / "geojson" / "OSBS_029.geojson").read_text())
    results = json.loads((out / "results.json").read_text())
    assert geo["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32617"
    assert len(geo["features"]) == len(results) > 0
    with rasterio.open(tif) as src:
        to_pixels = ~src.transform
    for feature, result in zip(geo["features"], results):
        ring = feature["geometry"]["coordinates"][0]
        assert len(ring) == 5 and ring[0] == ring[-1]
        pixels = np.array([to_pixels @ tuple(p) for p in ring[:4]])  # (4, 2)
        props = feature["properties"]
        x, y, w, h = props["bbox"]
        expected = [[x, y], [x, y + h], [x + w, y + h], [x + w, y]]  # counter-clockwise on the map
        np.testing.assert_allclose(pixels, expected, atol=1e-6)
        assert props["bbox"] == pytest.approx(result["bbox"]) and props["class_name"] == "Tree"
        assert props["score"] == pytest.approx(result["score"]) and props["category_id"] == 1


def test_predict_command_slices_a_png_and_draws_it(exported, tmp_path):
    out = tmp_path / "pred"
    summary = predict(parse([f"model={exported['onnx']}", f"images={deepforest_data_dir() / YELL}",
                             f"out={out}", "tile=320", "merge=fusion", "draw=true",
                             "progress=false", "conf=0.005"]))
    assert summary["images"] == 1 and summary["detections"] > 100
    assert not (out / "geojson").exists()  # a PNG has no georeference
    assert Image.open(out / "drawn" / YELL).size == (1249, 1035)


# A child process: its VmHWM (peak RSS) starts at exec, so the parent's memory is not in it.
# It predicts the top-left quarter of the scene, then the whole scene: 4x the pixels.
PEAK = """
import json, sys, torch
from retina.data.scene import open_scene
from retina.infer import load
def status(key):
    return int(next(l.split()[1] for l in open("/proc/self/status") if l.startswith(key)))
predictor = load(sys.argv[1], runtime='eager')  # the windowed reading's bound, in eager
predictor([torch.randint(0, 256, (3, 1000, 1000), dtype=torch.uint8)] * 4)  # warm up
report = {"before_kb": status("VmRSS:")}
for name in ("quarter", "whole"):
    with open_scene(sys.argv[2]) as scene:
        if name == "quarter":
            scene.width, scene.height = scene.width // 2, scene.height // 2
        det = predictor.predict_large(scene, tile=1000, overlap=0.1, progress=True)
    report[name] = {"peak_kb": status("VmHWM:"), "dets": len(det["boxes"])}
print(json.dumps(report))
"""


def write_big_scene(path: Path, side: int = 8000) -> None:
    """A side x side tiled GeoTIFF of the YELL scene repeated, written window by window."""
    tile = read_rgb(deepforest_data_dir() / YELL)[:, :1000, :1000].numpy()  # (3, 1000, 1000)
    profile = {"driver": "GTiff", "width": side, "height": side, "count": 3, "dtype": "uint8",
               "tiled": True, "blockxsize": 512, "blockysize": 512, "compress": "deflate",
               "crs": "EPSG:32612", "transform": rasterio.Affine(0.1, 0, 541000, 0, -0.1, 4978000)}
    with rasterio.open(path, "w", **profile) as dst:
        for y in range(0, side, 1000):
            for x in range(0, side, 1000):
                dst.write(tile, window=rasterio.windows.Window(x, y, 1000, 1000))


def test_8000_px_scene_in_bounded_memory(exported, tmp_path):
    scene = tmp_path / "big.tif"
    write_big_scene(scene)
    run = subprocess.run([sys.executable, "-c", PEAK, str(exported["safetensors"]), str(scene)],
                         capture_output=True, text=True, timeout=1200, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    mb = {k: (report[k]["peak_kb"] - report["before_kb"]) / 1024 for k in ("quarter", "whole")}
    print(f"8000 x 8000 GeoTIFF, 1000-px windows: peak RSS {report['whole']['peak_kb'] / 1024:.0f}"
          f" MB, {mb['whole']:.0f} MB over the loaded model ({mb['quarter']:.0f} MB for its "
          f"4000 x 4000 quarter); {report['whole']['dets']} detections")
    # the scene is 183 MB as uint8 (its quarter 46 MB) and 732 MB as float: 4x the pixels
    # cost a few MB (17 measured: detections), and the whole is less than the scene in uint8
    assert mb["whole"] - mb["quarter"] < 40 and mb["whole"] < 150, report
    assert report["whole"]["dets"] > 1000
    # the progress bar over 9 x 9 windows (x 0 900 ... 6300 7000); it clears itself at the end,
    # so its last frame drawn may be any count
    assert "/81 [" in run.stderr and "window/s" in run.stderr
