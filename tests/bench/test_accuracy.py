"""retina.bench.accuracy: per-site AP50 and the summary over seeds."""

import contextlib
import io

import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from retina.bench.accuracy import (
    OTHER_SITES,
    TRAINING_SITES,
    ratios,
    site_ap50,
    site_image_ids,
    site_of,
    spread,
    summarize_runs,
)
from retina.data.coco import load_coco
from retina.training.config import ROOT
from tests.helpers import jittered_results

VAL_ANN = ROOT / "data" / "neon_trees" / "annotations" / "val.json"


@pytest.fixture(scope="module")
def val_gt() -> COCO:
    return load_coco(VAL_ANN)


def test_site_of_neon_tiles():
    assert site_of("YELL_crop_x0400_y0800.png") == "YELL"
    assert site_of("val/OSBS_029_x0000_y0000.png") == "OSBS"
    assert TRAINING_SITES == {"YELL"}  # the YELL crop2 scene


def test_val_images_split_into_sites(val_gt):
    groups = site_image_ids(val_gt)
    assert list(groups) == ["OSBS", "SOAP", "YELL", OTHER_SITES]
    assert len(groups["YELL"]) == 12 and len(groups["OSBS"]) == len(groups["SOAP"]) == 1
    assert groups[OTHER_SITES] == sorted(groups["OSBS"] + groups["SOAP"])
    assert sorted(groups["YELL"] + groups[OTHER_SITES]) == sorted(val_gt.imgs)
    # only the images given
    assert site_image_ids(val_gt, groups["YELL"][:2])[OTHER_SITES] == []


def pycocotools_on_subset(gt: COCO, results: list[dict], image_ids: list[int]) -> float:
    """AP50 of pycocotools run on a ground truth holding only ``image_ids`` (the oracle)."""
    keep = set(image_ids)
    subset = COCO()
    subset.dataset = {
        "images": [im for im in gt.dataset["images"] if im["id"] in keep],
        "annotations": [a for a in gt.dataset["annotations"] if a["image_id"] in keep],
        "categories": gt.dataset["categories"],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        subset.createIndex()
        ev = COCOeval(subset, subset.loadRes([dict(r) for r in results if r["image_id"] in keep]),
                      "bbox")
        ev.evaluate(), ev.accumulate(), ev.summarize()
    return float(ev.stats[1])


def test_site_ap50_is_pycocotools_on_that_site_alone(val_gt):
    results = jittered_results(val_gt, seed=3, wrong_class=0.0, false_per_image=5)
    # make the other sites worse than YELL, so a mix-up of groups shows
    groups = site_image_ids(val_gt)
    for r in results:
        if r["image_id"] in groups[OTHER_SITES]:
            r["bbox"][0] += 0.4 * r["bbox"][2]
    by_site = site_ap50(val_gt, results, sorted(val_gt.imgs))
    assert list(by_site) == list(groups)
    for site, ids in groups.items():
        assert by_site[site] == pytest.approx(pycocotools_on_subset(val_gt, results, ids),
                                              abs=1e-12), site
    assert by_site["YELL"] > by_site[OTHER_SITES] + 0.1 > 0.1


def test_spread_is_median_and_range():
    assert spread([0.3, 0.1, 0.2]) == {"median": 0.2, "min": 0.1, "max": 0.3,
                                       "values": [0.3, 0.1, 0.2]}
    assert spread([0.1, 0.4])["median"] == pytest.approx(0.25)  # even count: mean of the middle


def run(map50: float, map_: float, yell: float, other: float, epochs: int) -> dict:
    return {"metrics": {"val/mAP_50": map50, "val/mAP": map_},
            "AP50_by_site": {"YELL": yell, OTHER_SITES: other},
            "epochs_planned": 30, "epochs_done": epochs}


def test_summary_over_seeds():
    s = summarize_runs([run(0.3, 0.10, 0.40, 0.10, 30), run(0.2, 0.05, 0.25, 0.05, 29),
                        run(0.25, 0.07, 0.30, 0.20, 30)])
    assert (s["mAP_50"]["median"], s["mAP_50"]["min"], s["mAP_50"]["max"]) == (0.25, 0.2, 0.3)
    assert s["mAP"]["median"] == 0.07
    assert s["AP50_by_site"][OTHER_SITES] == {"median": 0.10, "min": 0.05, "max": 0.20,
                                             "values": [0.10, 0.05, 0.20]}
    assert s["epochs"] == [30, 29, 30] and s["epochs_planned"] == 30


def test_ratios_of_medians_against_each_torchvision_contender():
    gfl = summarize_runs([run(0.3, 0.12, 0.4, 0.2, 30)])
    fair = summarize_runs([run(0.2, 0.08, 0.3, 0.1, 15), run(0.25, 0.10, 0.3, 0.1, 15)])
    default = summarize_runs([run(0.0, 0.0, 0.0, 0.0, 15)])
    out = ratios({"gfl": gfl, "torchvision_fair": fair, "torchvision_default": default})
    assert list(out) == ["gfl/torchvision_fair", "gfl/torchvision_default"]
    # medians 0.3 / 0.225, 0.12 / 0.09, 0.2 / 0.1
    assert out["gfl/torchvision_fair"] == pytest.approx(
        {"mAP_50": 4 / 3, "mAP": 4 / 3, f"AP50_{OTHER_SITES}": 2.0})
    assert out["gfl/torchvision_default"] == {"mAP_50": None, "mAP": None,
                                              f"AP50_{OTHER_SITES}": None}
