"""retina.training.nonfinite: a non-finite loss on one of two processes (gloo) skips or stops
both (the two_processes fixture in conftest.py; training runs: e2e/test_robust.py)."""

import os

import torch


def test_nonfinite_on_one_process_skips_or_stops_all(two_processes):
    # a process skipping alone would leave the other waiting for its gradients
    assert [two_processes[r]["skip_goes_on"] for r in (0, 1)] == [False, False]
    assert [two_processes[r]["skipped"] for r in (0, 1)] == [1, 1]
    saved = two_processes["save_dir"] / "epoch0_step5_rank0.pt"
    assert "image ids [10]" in two_processes[0]["error"] and str(saved) in two_processes[0]["error"]
    assert "on another process at epoch 0, global step 5" in two_processes[1]["error"]
    assert os.listdir(two_processes["save_dir"]) == [saved.name]  # only the NaN process's batch
    assert torch.load(saved)["image_ids"].tolist() == [10]
