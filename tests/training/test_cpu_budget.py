import logging

import pytest
import torch

from retina.training.cpu_budget import MAX_GPU_WORKERS, apply_cpu_budget, cpu_budget


@pytest.mark.parametrize(("threads", "cores", "expected"), [
    (2, 2, (2, 0)),  # two cores, torch on both: the training process loads the batches
    (1, 2, (1, 1)),  # one thread: the other core loads
    (4, 8, (4, 4)),
])
def test_cpu_training_leaves_loader_workers_the_cores_threads_do_not_use(threads, cores, expected):
    assert cpu_budget(threads, None, "cpu", cores=cores) == expected


def test_accelerator_training_keeps_one_core_for_the_training_process():
    assert cpu_budget(2, None, "gpu", cores=4) == (2, 3)
    assert cpu_budget(2, None, "cuda", cores=64) == (2, MAX_GPU_WORKERS)


def test_values_the_user_sets_are_kept_and_oversubscription_is_warned(caplog):
    with caplog.at_level(logging.WARNING):
        assert cpu_budget(2, 3, "cpu", cores=2) == (2, 3)
    assert "compete for the cores" in caplog.text


def test_apply_sets_torch_threads_and_returns_the_workers():
    before = torch.get_num_threads()
    try:
        workers = apply_cpu_budget(1, None, "cpu")
        assert torch.get_num_threads() == 1
        assert workers == max(0, min(len(__import__("os").sched_getaffinity(0)) - 1,
                                     MAX_GPU_WORKERS))
    finally:
        torch.set_num_threads(before)
