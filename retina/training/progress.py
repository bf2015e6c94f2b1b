"""A training progress bar that knows the whole run: epoch N/M, and the time left for all of
it, with the expected duration logged once the first steps are measured."""

from __future__ import annotations

import datetime as dt
import logging
import math
import time

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar

log = logging.getLogger(__name__)


def clock(seconds: float) -> str:
    """``1:02:03`` / ``2:03``: a duration as a person reads it."""
    seconds = max(0, round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class RunProgress:
    """Seconds per step and time left, from the wall time since the first step ended (the
    first one also pays for start-up). Validations count as they happen."""

    def __init__(self, total_steps: float) -> None:
        self.total = total_steps
        self.first_end: float | None = None
        self.first_step = 0

    def step_done(self, step: int, now: float | None = None) -> None:
        if self.first_end is None:
            self.first_end, self.first_step = now or time.monotonic(), step

    def seconds_per_step(self, step: int, now: float | None = None) -> float | None:
        if self.first_end is None or step <= self.first_step:
            return None
        return ((now or time.monotonic()) - self.first_end) / (step - self.first_step)

    def seconds_left(self, step: int, now: float | None = None) -> float | None:
        rate = self.seconds_per_step(step, now)
        if rate is None or not math.isfinite(self.total):
            return None
        return rate * max(0.0, self.total - step)


class RunProgressBar(TQDMProgressBar):
    """Lightning's bar, described as ``Epoch 3/30`` and with the run's ``eta`` in its
    postfix; logs the expected duration after ``estimate_after`` measured steps."""

    def __init__(self, estimate_after: int = 3, **kwargs) -> None:
        super().__init__(**kwargs)
        self.estimate_after = estimate_after
        self.run: RunProgress | None = None
        self.estimated = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self.run = RunProgress(trainer.estimated_stepping_batches)
        self.estimated = False

    def on_train_epoch_start(self, trainer: L.Trainer, *args) -> None:
        super().on_train_epoch_start(trainer, *args)
        planned = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
        epoch = trainer.current_epoch + 1
        self.train_progress_bar.set_description(f"Epoch {epoch}/{planned}" if planned
                                                else f"Epoch {epoch}")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        self.run.step_done(trainer.global_step)
        if not self.estimated and trainer.global_step >= self.run.first_step + self.estimate_after:
            self.estimated = True
            self.log_estimate(trainer.global_step)
        super().on_train_batch_end(trainer, pl_module, *args)

    def log_estimate(self, step: int) -> None:
        rate, left = self.run.seconds_per_step(step), self.run.seconds_left(step)
        if left is None:
            return
        end = dt.datetime.now() + dt.timedelta(seconds=left)
        log.info("expected duration: ~%s more for %d steps at %.2f s/step (validations add "
                 "to it), done at ~%s", clock(left), self.run.total - step, rate,
                 end.strftime("%H:%M"))

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        metrics = super().get_metrics(trainer, pl_module)
        left = self.run.seconds_left(trainer.global_step) if self.run else None
        return metrics | ({"eta": clock(left)} if left is not None else {})
