"""``retina tile ... keep_empty= edge=``: which tiles are written, their size, place and pixels,
on one 250 x 130 image with one box, cut into 100 px tiles without overlap."""

import json

import numpy as np
import pytest
from PIL import Image

from retina.data.tile import main as tile_main

# windows along x (250 px): shift -> starts 0, 100, 150 (the last moved in to end at 250);
# cut -> 0, 100, 200 (the last 50 px wide). Along y (130 px): shift 0, 30; cut 0, 100 (30 high).
# The box (10, 10)-(40, 40) lies in the (0, 0) tile. With shift the (0, 30) tile holds its
# y 30..40 too: 10 / 30 of it, below min_visible 0.5: a sliver.
WINDOWS = {
    "shift": [(x, y, x + 100, y + 100) for y in (0, 30) for x in (0, 100, 150)],
    "cut": [(x, y, min(x + 100, 250), min(y + 100, 130)) for y in (0, 100) for x in (0, 100, 200)],
}
SLIVERS = {"shift": 1, "cut": 0}


@pytest.fixture
def source(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 255, (130, 250, 3), np.uint8)
    (tmp_path / "src").mkdir()
    Image.fromarray(pixels).save(tmp_path / "src" / "scene.png")
    coco = {"images": [{"id": 1, "file_name": "scene.png", "width": 250, "height": 130}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 30, 30],
                             "area": 900, "iscrowd": 0}],
            "categories": [{"id": 1, "name": "thing"}]}
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    return tmp_path, pixels


@pytest.mark.parametrize("edge", ["shift", "cut"])
@pytest.mark.parametrize("keep_empty", [False, True])
def test_tile_keep_empty_and_edge(source, tmp_path, capsys, edge, keep_empty):
    root, pixels = source
    out = tmp_path / "tiles"
    assert tile_main(["format=coco", f"ann={root / 'ann.json'}", f"images={root / 'src'}",
                      f"out={out}", "tile=100", "overlap=0", f"edge={edge}",
                      f"keep_empty={str(keep_empty).lower()}"]) == 0
    expected = WINDOWS[edge] if keep_empty else WINDOWS[edge][:1]
    coco = json.loads((out / "annotations.json").read_text())
    written = {im["file_name"]: im for im in coco["images"]}
    assert sorted(written) == sorted(f"scene_x{x0:04d}_y{y0:04d}.png" for x0, y0, _, _ in expected)
    for x0, y0, x1, y1 in expected:
        im = written[f"scene_x{x0:04d}_y{y0:04d}.png"]
        assert (im["width"], im["height"]) == (x1 - x0, y1 - y0)
        tile = np.asarray(Image.open(out / "images" / im["file_name"]))
        np.testing.assert_array_equal(tile, pixels[y0:y1, x0:x1])
    # the one box, in the (0, 0) tile where it was
    (ann,) = coco["annotations"]
    assert written["scene_x0000_y0000.png"]["id"] == ann["image_id"]
    assert ann["bbox"] == [10, 10, 30, 30]
    empty = 0 if keep_empty else len(WINDOWS[edge]) - 1
    assert (f"1 images, 1 boxes -> {len(expected)} tiles, 1 boxes; left out {empty} empty tiles "
            f"and {SLIVERS[edge]} slivers; 0 boxes in no tile") in capsys.readouterr().out


def test_tile_unknown_edge_is_a_one_line_error(source, tmp_path, capsys):
    root, _ = source
    with pytest.raises(SystemExit) as info:
        tile_main(["format=coco", f"ann={root / 'ann.json'}", f"images={root / 'src'}",
                   f"out={tmp_path / 'tiles'}", "edge=wrap"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: edge=wrap: not one of shift, cut") and len(err.splitlines()) == 1
    assert not (tmp_path / "tiles").exists()  # checked before anything is written
