import json
import subprocess
import sys

import pytest

from retina.training.config import ROOT


@pytest.mark.slow
def test_speed_quick_writes_every_measure_and_ratio(tmp_path):
    out = tmp_path / "speed.json"
    run = subprocess.run(
        [sys.executable, "-m", "retina", "bench", "speed", "quick=true", f"out={out}"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(out.read_text())
    measures = ("train_step", "inference", "loss", "postprocess", "postprocess_saturated")
    assert set(report["ratios"]) == {*measures, "peak_memory"}
    assert all(v > 0 for v in report["ratios"].values())
    res = report["by_size"]["256"]
    for m in measures:
        assert res[m]["ours"]["median_ms"] >= res[m]["ours"]["min_ms"] > 0
        assert res[m]["torchvision"]["median_ms"] > 0
    assert res["train_gflop"]["ours"] > 0 and report["matmul_peak_gflops"] > 0
    assert report["machine"]["torch"] and "ratio" in run.stdout
