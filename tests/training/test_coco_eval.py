"""retina.training.coco_eval: the COCO numbers are pycocotools' own."""

import json

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from retina.training.coco_eval import coco_evaluate


def test_coco_numbers_equal_pycocotools_run_directly(tmp_path):
    gt = {
        "images": [{"id": i, "width": 100, "height": 100, "file_name": f"{i}.png"} for i in (1, 2, 3)],
        "categories": [{"id": 3, "name": "a"}, {"id": 7, "name": "b"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 10, 30, 30], "area": 900, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 7, "bbox": [50, 50, 40, 20], "area": 800, "iscrowd": 0},
            {"id": 3, "image_id": 2, "category_id": 3, "bbox": [0, 0, 90, 90], "area": 8100, "iscrowd": 0},
            {"id": 4, "image_id": 3, "category_id": 7, "bbox": [5, 5, 10, 10], "area": 100, "iscrowd": 1},
        ],
    }
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    rng = np.random.default_rng(0)
    dets = [
        {"image_id": int(rng.integers(1, 4)), "category_id": int(rng.choice([3, 7])),
         "bbox": [float(v) for v in rng.uniform(0, 50, 2).tolist() + rng.uniform(5, 50, 2).tolist()],
         "score": float(rng.uniform())}
        for _ in range(40)
    ] + [{"image_id": 1, "category_id": 3, "bbox": [11, 9, 30, 31], "score": 0.9}]
    ours, _ = coco_evaluate(COCO(str(path)), [dict(d) for d in dets])
    gt_coco = COCO(str(path))
    ev = COCOeval(gt_coco, gt_coco.loadRes([dict(d) for d in dets]), "bbox")
    ev.evaluate(), ev.accumulate(), ev.summarize()
    assert list(ours.values()) == [float(s) for s in ev.stats]
    assert ours["mAP"] > 0
