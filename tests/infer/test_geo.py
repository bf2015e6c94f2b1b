"""retina.infer.geo: boxes in scene pixels to GeoJSON polygons in the scene's CRS, checked
against rasterio's affine maths (the run on the real GeoTIFF is in e2e/test_sliced.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from rasterio import Affine

from retina.infer.geo import box_ring, to_geojson


def signed_area(ring: list[list[float]]) -> float:
    xy = np.array(ring)
    return 0.5 * float(np.sum(xy[:-1, 0] * xy[1:, 1] - xy[1:, 0] * xy[:-1, 1]))


@pytest.mark.parametrize("transform", [
    Affine(0.1, 0.0, 404211.9, 0.0, -0.1, 3285142.9),  # north up (OSBS_029)
    Affine(0.5, 0.0, 100.0, 0.0, 0.5, 200.0),  # y down on the map
    Affine.translation(10, 20) @ Affine.rotation(30) @ Affine.scale(0.3, -0.3),  # rotated
])
def test_polygons_map_back_to_the_pixel_boxes(transform):
    det = {"boxes": torch.tensor([[10.5, 20.25, 30.0, 41.0], [0.0, 0.0, 400.0, 400.0]]),
           "scores": torch.tensor([0.9, 0.2]), "labels": torch.tensor([1, 0])}
    geo = to_geojson(det, tuple(transform)[:6], "EPSG:32617", ["a", "b"], [3, 7])
    assert geo["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32617"
    first = geo["features"][0]
    assert first["properties"] == {"score": pytest.approx(0.9), "label": 1, "category_id": 7,
                                   "class_name": "b", "bbox": [10.5, 20.25, 19.5, 20.75]}
    for feature, box in zip(geo["features"], det["boxes"].tolist()):
        ring = feature["geometry"]["coordinates"][0]
        assert ring[0] == ring[-1] and signed_area(ring) > 0  # closed, counter-clockwise
        back = np.array([~transform @ tuple(p) for p in ring[:4]])  # (4, 2) pixels
        x1, y1, x2, y2 = box
        assert sorted(map(tuple, back.round(9))) == sorted([(x1, y1), (x1, y2), (x2, y1), (x2, y2)])


def test_ring_of_a_north_up_box():
    # x = 0.1 col + 100, y = -0.1 row + 50: box (0, 0, 10, 20) spans x 100..101, y 48..50
    ring = box_ring([0, 0, 10, 20], (0.1, 0, 100, 0, -0.1, 50))
    assert ring == [[100, 50], [100, 48], [101, 48], [101, 50], [100, 50]]


def test_without_crs_no_crs_member():
    det = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0).long()}
    assert to_geojson(det, (1, 0, 0, 0, 1, 0), None, ["a"], [1]) == {
        "type": "FeatureCollection", "features": []}
