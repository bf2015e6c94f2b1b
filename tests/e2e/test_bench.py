import json
import subprocess
import sys

import pytest

from retina.training.config import ROOT


@pytest.mark.long  # a benchmark: 1-4 minutes of timed loops
def test_speed_quick_writes_every_measure_and_ratio(tmp_path):
    out = tmp_path / "speed.json"
    run = subprocess.run(
        [sys.executable, "-m", "retina", "bench", "speed", "quick=true", f"out={out}"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(out.read_text())
    measures = ("train_step", "inference", "loss", "postprocess", "postprocess_saturated")
    variants = ("train_step_frozen_bn", "train_step_channels_last", "inference_unfolded",
                "inference_channels_last")
    assert set(report["ratios"]) == {*measures, *variants, "peak_memory"}
    assert all(v > 0 for v in report["ratios"].values())
    res = report["by_size"]["256"]
    for m in measures:
        assert res[m]["ours"]["median_ms"] >= res[m]["ours"]["min_ms"] > 0
        assert res[m]["torchvision"]["median_ms"] > 0
    assert res["train_gflop"]["ours"] > 0 and report["matmul_peak_gflops"] > 0
    assert report["machine"]["torch"] and "ratio" in run.stdout


def test_scene_scores_resized_and_sliced_on_the_whole_scene(trained_retinanet, tmp_path):
    from retina.bench.__main__ import run

    out, picture = tmp_path / "scene.json", tmp_path / "scene.png"
    report = run(["scene", f"model={trained_retinanet.ckpt}", "tiles=[240]",
                  f"draw={picture}", f"out={out}"])
    assert json.loads(out.read_text())["results"] == report["results"]
    assert report["trees"] == 279 and report["megapixels"] == pytest.approx(1249 * 1035 / 1e6)
    assert set(report["results"]) == {f"{method} [{runtime}]" for method in (
        "resize", "sliced tile=240") for runtime in ("eager", "auto")}
    assert report["runtimes"] == ["eager", "auto"]  # a checkpoint: eager and ONNX Runtime
    for name, row in report["results"].items():
        if "[auto]" in name:  # the same detections, another runtime
            eager = report["results"][name.replace("[auto]", "[eager]")]
            assert row["detections"] == eager["detections"] and row["vs_eager"] > 0
            assert row["scene_mAP_50"] == pytest.approx(eager["scene_mAP_50"], abs=1e-3)
        assert row["s_per_megapixel"] > 0 and row["detections"] > 0
        assert 0 <= row["mAP"] <= row["mAP_50"] <= 1 and 0 <= row["scene_AR"] <= 1
        assert row["scene_mAP_50"] >= row["mAP_50"] - 1e-9  # more detections, not fewer hits
    assert picture.stat().st_size < 300_000
