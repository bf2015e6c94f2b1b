"""Detections in a scene's map coordinates: a GeoJSON FeatureCollection.

Each box becomes a Polygon whose corners are the box corners mapped by the scene's affine
transform (pixel corner convention, as GDAL and rasterio), ring counter-clockwise on the
map (RFC 7946). Properties: ``score``, ``label`` (0..K-1), ``category_id`` (the training
dataset's), ``class_name`` and ``bbox`` (x, y, w, h in scene pixels, as the COCO results).
The collection names the CRS in a ``crs`` member (the 2008 GeoJSON form that GDAL and QGIS
read), since the coordinates are in the scene's CRS, not WGS 84.
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import Tensor

from retina.data.scene import Affine


def apply(transform: Affine, x: float, y: float) -> tuple[float, float]:
    """Pixel (x, y) -> map coordinates."""
    a, b, c, d, e, f = transform
    return a * x + b * y + c, d * x + e * y + f


def box_ring(box: list[float], transform: Affine) -> list[list[float]]:
    """A pixel box x1y1x2y2 -> its closed ring of 5 map points, counter-clockwise."""
    x1, y1, x2, y2 = box
    corners = [(x1, y1), (x1, y2), (x2, y2), (x2, y1)]  # counter-clockwise once y points up
    a, b, _, d, e, _ = transform
    if a * e - b * d > 0:  # y points down on the map as in pixels: the other way round
        corners.reverse()
    ring = [list(apply(transform, x, y)) for x, y in corners]
    return ring + ring[:1]


def crs_member(crs: str) -> dict:
    name = f"urn:ogc:def:crs:EPSG::{crs.split(':', 1)[1]}" if crs.upper().startswith("EPSG:") \
        else crs
    return {"type": "name", "properties": {"name": name}}


def to_geojson(det: dict[str, Tensor], transform: Affine, crs: str | None,
               class_names: list[str], cat_ids: list[int]) -> dict:
    """One scene's detections (boxes in scene pixels) as a GeoJSON FeatureCollection."""
    features = []
    boxes = det["boxes"].detach().double().cpu().tolist()
    for box, score, label in zip(boxes, det["scores"].tolist(), det["labels"].tolist()):
        x1, y1, x2, y2 = box
        features.append({
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [box_ring(box, transform)]},
            "properties": {"score": score, "label": label, "category_id": cat_ids[label],
                           "class_name": class_names[label], "bbox": [x1, y1, x2 - x1, y2 - y1]},
        })
    collection = {"type": "FeatureCollection", "features": features}
    if crs:
        collection["crs"] = crs_member(crs)
    return collection


def write_geojson(path: str | Path, collection: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(collection))
    return path
