"""retina.bench eval: both COCO backends timed on the same synthetic detections."""

import json

from retina.bench.__main__ import run
from retina.bench.evaluation import synthetic_coco, synthetic_detections


def test_synthetic_data_is_coco_like():
    coco = synthetic_coco(40, 5, seed=1)
    results = synthetic_detections(coco, 30, seed=1)
    assert len(coco.imgs) == 40 and 150 < len(coco.anns) < 450  # about 7 boxes per image
    areas = [a["area"] for a in coco.anns.values()]
    assert min(areas) < 32**2 < 96**2 < max(areas)  # small, medium and large boxes
    assert all(0 <= a["bbox"][0] and a["bbox"][0] + a["bbox"][2] <= 640 for a in coco.anns.values())
    per_image = {i: sum(r["image_id"] == i for r in results) for i in coco.imgs}
    assert set(per_image.values()) == {30}


def test_eval_command_reports_both_backends(tmp_path, capsys):
    out = tmp_path / "eval.json"
    run(["eval", "images=30", "dets=20", "classes=5", "repeats=1", f"out={out}"])
    report = json.loads(out.read_text())
    r = report["eval"]
    assert (r["images"], r["detections"], r["classes"]) == (30, 600, 5)
    for backend in ("faster-coco-eval", "pycocotools"):
        assert r[backend]["median_ms"] >= r[backend]["min_ms"] > 0
    assert r["max_abs_diff"] <= 1e-6 and 0 < r["mAP"] < 1 and r["ratio"] > 0
    assert r["target_ms"] == 500 and isinstance(r["meets_target"], bool)
    assert report["command"].startswith("retina bench eval") and report["machine"]
    assert "faster-coco-eval" in capsys.readouterr().out
