"""Many files, many processes: Lightning's predict loop shares a list of items (the files
of ``retina predict``) among processes, one per device, on one or several machines.

Each process takes every ``world_size``-th item from its global rank on (items sorted by
name: large and small scenes spread evenly), runs ``work`` on them in batches and writes
what belongs to each item itself (a scene's GeoJSON, its drawing); what ``work`` returns is
gathered on global rank 0 (``torch.distributed.all_gather_object``), which writes the one
results file. Every process makes its own predictor on its own device
(``make_work(device)``); rank 0 makes its first, so that a graph it exports into the cache
(``retina.infer.graph_cache``) is there for the others to read.

On CPUs the processes talk through gloo and each gets ``cores / processes`` threads
(Lightning sets torch's count, which the runtimes follow); on GPUs through NCCL.
Several machines: run the same command on each with ``num_nodes=N`` under a launcher
Lightning knows (SLURM's ``srun``, ``torchrun``, or MASTER_ADDR / NODE_RANK set by hand).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

Work = Callable[[list[int]], list[Any]]  # item indices -> one result per item


class SharedPredict(L.LightningModule):
    """Runs ``make_work(device)`` over this process's share of ``range(num_items)``.

    Args:
        make_work: called once per process, after it has its device.
        num_items: how many items there are.
        batch_size: items per ``work`` call.
    """

    def __init__(self, make_work: Callable[[torch.device], Work], num_items: int,
                 batch_size: int) -> None:
        super().__init__()
        self.make_work = make_work
        self.num_items = num_items
        self.batch_size = batch_size
        self.work: Work | None = None

    def share(self) -> list[int]:
        """This process's items: every ``world_size``-th from its global rank."""
        return list(range(self.global_rank, self.num_items, self.trainer.world_size))

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(self.share(), batch_size=self.batch_size, collate_fn=list)

    def on_predict_start(self) -> None:
        if self.global_rank == 0:
            self.work = self.make_work(self.device)
        self.trainer.strategy.barrier("retina: the predictor of rank 0 is ready")
        if self.global_rank != 0:
            self.work = self.make_work(self.device)

    def predict_step(self, batch: list[int], batch_idx: int) -> list[Any]:
        return self.work(batch)


def predict_shared(make_work: Callable[[torch.device], Work], num_items: int, batch_size: int,
                   accelerator: str, devices: int | list[int], num_nodes: int = 1
                   ) -> list[Any] | None:
    """``work``'s results for every item, in item order, on global rank 0 (None on the
    other ranks), from ``devices`` processes per node on ``num_nodes`` nodes."""
    trainer = L.Trainer(
        accelerator=accelerator, devices=devices, num_nodes=num_nodes, strategy="ddp",
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, use_distributed_sampler=False)
    module = SharedPredict(make_work, num_items, batch_size)
    batches = trainer.predict(module, return_predictions=True) or []
    mine = dict(zip(range(trainer.global_rank, num_items, trainer.world_size),
                    [r for batch in batches for r in batch]))
    if trainer.world_size == 1:
        return [mine[i] for i in range(num_items)]
    gathered: list[dict[int, Any]] = [{} for _ in range(trainer.world_size)]
    torch.distributed.all_gather_object(gathered, mine)
    if trainer.global_rank != 0:
        return None
    everything = {i: r for part in gathered for i, r in part.items()}
    return [everything[i] for i in range(num_items)]
