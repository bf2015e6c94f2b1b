"""Stop, or skip, a training step whose loss is NaN or infinite, and keep its batch for a look."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """A training loss was NaN or infinite (the message names epoch, step, images and file)."""


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _on_any_process(flag: bool, device: torch.device) -> bool:
    """``flag`` or-ed over all processes (one all-reduce under torch.distributed)."""
    if not _distributed():
        return flag
    t = torch.tensor([float(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


class NonFiniteGuard:
    """Checks every training loss: a non-finite one raises :class:`NonFiniteLossError`, or
    with ``skip`` the step is skipped (the caller returns ``None`` from ``training_step``, so
    Lightning runs no backward and no optimizer step) and counted in ``skipped``.

    Under torch.distributed every process learns whether any process saw a non-finite loss,
    so all of them stop or all skip the same step: one process skipping alone would leave
    the others waiting for its gradients.

    Args:
        skip: skip such steps instead of stopping (``train.skip_nonfinite``).
        save_dir: where a stopping step's batch is saved as ``epoch{E}_step{S}.pt``
            (``_rank{R}`` added under torch.distributed); ``None``: not saved.
    """

    def __init__(self, skip: bool = False, save_dir: str | Path | None = None) -> None:
        self.skip = skip
        self.save_dir = Path(save_dir) if save_dir is not None else None
        self.skipped = 0

    def __call__(self, loss: Tensor, losses: dict[str, Tensor], batch: dict[str, Tensor],
                 epoch: int, step: int) -> bool:
        """Whether the step goes on (``True``) or is skipped (``False``).

        Args:
            loss: () the summed training loss.
            losses: its terms (``loss_*``) and other logged values, named in the message.
            batch: the collated batch (``images`` (B, 3, H, W), ``boxes`` (B, M, 4),
                ``labels`` (B, M), ``image_ids`` (B,), ...).
            epoch: current epoch (0-based).
            step: global step (optimizer steps so far).

        Raises:
            NonFiniteLossError: a non-finite loss here or on another process, unless ``skip``.
        """
        bad_here = not bool(torch.isfinite(loss.detach()).all())
        if not _on_any_process(bad_here, loss.device):
            return True
        where = f"epoch {epoch}, global step {step}"
        if bad_here:
            terms = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in losses.items() if k.startswith("loss_"))
            what = f"non-finite training loss ({terms}) at {where}, image ids {batch['image_ids'].tolist()}"
        else:
            what = f"non-finite training loss on another process at {where}"
        if self.skip:
            self.skipped += 1
            log.warning("%s: step skipped (train.skip_nonfinite=true, %d so far)", what, self.skipped)
            return False
        saved = ""
        if bad_here and self.save_dir is not None:
            saved = f"; batch saved to {self.save(batch, losses, epoch, step)}"
        raise NonFiniteLossError(f"{what}{saved}. train.skip_nonfinite=true skips such steps")

    def save(self, batch: dict[str, Tensor], losses: dict[str, Tensor], epoch: int, step: int) -> Path:
        """Write the batch's tensors (on the CPU), the loss terms, epoch and step; returns the file."""
        rank = f"_rank{dist.get_rank()}" if _distributed() else ""
        path = self.save_dir / f"epoch{epoch}_step{step}{rank}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {k: v.detach().cpu() for k, v in batch.items() if isinstance(v, Tensor)}
        record["losses"] = {k: v.detach().float().cpu() for k, v in losses.items()}
        record["epoch"], record["global_step"] = epoch, step
        torch.save(record, path)
        return path
