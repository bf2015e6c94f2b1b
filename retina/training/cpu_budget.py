"""How many CPU threads and data-loader workers a run uses: by default no more busy workers
than the cores that torch's threads leave free, so that the two never compete for a core.

On two cores torch's two threads and one loader worker made an epoch of the NEON default
~12 % slower than loading in the training process (measured: ``docs/training.md``).
"""

from __future__ import annotations

import logging
import os

import torch

log = logging.getLogger(__name__)

# loader workers on an accelerator: decoding and augmenting keeps a GPU fed, beyond
# that more processes only cost memory
MAX_GPU_WORKERS = 8


def cpu_cores() -> int:
    """Cores this process may run on (its affinity mask, as a cluster scheduler sets it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def uses_accelerator(accelerator: str | None) -> bool:
    """Whether a Lightning ``accelerator`` setting trains off the CPU."""
    if accelerator in (None, "auto"):
        return torch.cuda.is_available() or torch.backends.mps.is_available()
    return accelerator != "cpu"


def cpu_budget(threads: int | None, workers: int | None, accelerator: str | None,
               cores: int | None = None) -> tuple[int, int]:
    """``(torch threads, loader workers)``: a value the user set is kept, a None is chosen.

    Training on the CPU: threads default to every core and workers to the cores left over
    (0: the training process loads the batches). On an accelerator the CPU only feeds it:
    workers default to all cores but one, up to :data:`MAX_GPU_WORKERS`.
    """
    cores = cores or cpu_cores()
    threads = threads or torch.get_num_threads()
    if workers is None:
        spare = cores - 1 if uses_accelerator(accelerator) else cores - threads
        workers = max(0, min(spare, MAX_GPU_WORKERS))
    if not uses_accelerator(accelerator) and threads + workers > cores:
        log.warning("%d torch threads + %d loader workers on %d cores: they compete for the "
                    "cores (leave data.num_workers=null to choose for you)", threads, workers, cores)
    return threads, workers


def apply_cpu_budget(threads: int | None, workers: int | None, accelerator: str | None) -> int:
    """Set torch's thread count, log the split and return the loader workers to use."""
    threads, workers = cpu_budget(threads, workers, accelerator)
    torch.set_num_threads(threads)
    log.info("CPU: %d torch threads, %d data-loader workers, %d cores", threads, workers,
             cpu_cores())
    return workers
