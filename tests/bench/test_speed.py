"""retina.bench.speed: the ratios it reports and the device and precision it accepts (the
timed run itself is in tests/e2e/test_bench.py)."""

import pytest
import torch

from retina.bench.__main__ import main as bench
from retina.bench.speed import autocast, check_device, ratios


def row(ms: float) -> dict:
    return {"median_ms": ms, "min_ms": ms - 1}


def test_every_variant_of_ours_gets_a_ratio_against_the_same_torchvision():
    res = {
        "train_step": {"ours": row(80), "torchvision": row(100), "ours_channels_last": row(70)},
        "inference": {"ours": row(30), "torchvision": row(40), "ours_unfolded": row(36)},
        "inference_compiled": {"ours": row(10), "torchvision": row(20)},
        "torchvision_compiled": True,  # not a row
        "peak_memory": {"ours": {"peak_rss_mb": 900.0}, "torchvision": {"peak_rss_mb": 1000.0},
                        "ours_frozen_bn": {"peak_rss_mb": 500.0}},
        "train_gflop": {"ours": 1.0, "torchvision": 1.0},
    }
    assert ratios(res) == pytest.approx({
        "train_step": 0.8, "train_step_channels_last": 0.7,  # 80/100, 70/100
        "inference": 0.75, "inference_unfolded": 0.9,  # 30/40, 36/40
        "inference_compiled": 0.5, "peak_memory": 0.9,  # 10/20, 900/1000
    })
    res["peak_memory"] = {"ours": {"peak_cuda_mb": 3.0}, "torchvision": {"peak_cuda_mb": 4.0}}
    assert ratios(res)["peak_memory"] == 0.75


def test_device_and_precision_are_checked_before_anything_runs(capsys):
    assert check_device("cpu", "bf16-mixed") == torch.device("cpu")
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16-mixed, got '16'"):
        check_device("cpu", "16")
    with pytest.raises(ValueError, match="device must be cpu or cuda"):
        check_device("meta", "fp32")
    with pytest.raises(SystemExit) as exit_:
        bench(["speed", "precision=fp16"])
    assert exit_.value.code == 2
    assert "precision must be one of fp32, bf16-mixed" in capsys.readouterr().err


def test_cuda_without_a_gpu_is_a_one_line_error(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a GPU machine too
    with pytest.raises(SystemExit) as exit_:
        bench(["speed", "device=cuda"])
    assert exit_.value.code == 2
    assert "device=cuda: torch" in capsys.readouterr().err


def test_bf16_mixed_autocasts_convolutions_and_fp32_does_not():
    conv, x = torch.nn.Conv2d(3, 4, 3), torch.rand(1, 3, 8, 8)
    with autocast(torch.device("cpu"), "bf16-mixed"):
        assert conv(x).dtype == torch.bfloat16
    with autocast(torch.device("cpu"), "fp32"):
        assert conv(x).dtype == torch.float32
