"""One job of a sweep: run the training task and leave a ``job.json`` record in its run directory.

The record is what ``retina.sweeps.report`` reads to build the sweep summary, so it holds
everything the summary shows: the job's overrides, ``ok``/``failed``, the error, the wall time
and the final metrics. In a multirun a failing job (an exception, or no finite optimized metric)
is recorded and the sweep goes on; in a single run the exception propagates as usual.
"""

from __future__ import annotations

import json
import logging
import math
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, ListConfig

log = logging.getLogger(__name__)

JOB_FILE = "job.json"
OK = "ok"
FAILED = "failed"


def direction(setting) -> str:
    """``maximize`` or ``minimize`` from a sweeper's ``direction`` setting (a name, an Optuna
    ``Direction``, a list for several objectives: the first counts); none (basic sweeper):
    ``maximize``, as for ``val/mAP``."""
    if isinstance(setting, (list, tuple, ListConfig)):
        setting = setting[0] if len(setting) else None
    return "minimize" if str(setting).rsplit(".", 1)[-1].lower() == "minimize" else "maximize"


def describe(error: BaseException) -> str:
    """``"ValueError: loss.gamma must be ..."``: the root cause (Hydra wraps errors raised while
    building objects in an InstantiationException), on one line."""
    while error.__cause__ is not None:
        error = error.__cause__
    return " ".join(f"{type(error).__name__}: {error}".split())


def job_record(
    cfg: DictConfig, task: Callable[[DictConfig], dict[str, float]]
) -> tuple[dict, BaseException | None]:
    """Run ``task(cfg)`` and describe how it went.

    Returns:
        The record ``{"job", "overrides", "status", "error", "wall_s", "metric", "direction",
        "metrics"}`` and the exception the task raised (None if it returned).
    """
    hydra_cfg = HydraConfig.get()
    metric = cfg.get("optimized_metric")
    record = {
        "job": int(hydra_cfg.job.get("num") or 0),
        "overrides": list(hydra_cfg.overrides.task),
        "status": OK,
        "error": "",
        "wall_s": 0.0,
        "metric": metric,
        "direction": direction(hydra_cfg.sweeper.get("direction")),
        "metrics": {},
    }
    error = None
    start = time.perf_counter()
    try:
        record["metrics"] = dict(task(cfg))
    except Exception as e:  # noqa: BLE001 - any failure of a trial is recorded, not fatal
        error = e
        record["status"] = FAILED
        record["error"] = describe(e)
        log.error("job %s failed:\n%s", record["job"], traceback.format_exc())
    record["wall_s"] = round(time.perf_counter() - start, 3)
    if error is None and metric:
        value = record["metrics"].get(metric)
        if value is None or not math.isfinite(value):
            record["status"] = FAILED
            record["error"] = (
                f"optimized_metric {metric} is {value}: no finite value "
                "(did validation run? see trainer.check_val_every_n_epoch)"
            )
    return record, error


def write_record(record: dict, output_dir: str | Path) -> Path:
    """``record`` as ``output_dir/job.json``."""
    path = Path(output_dir) / JOB_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, allow_nan=True))
    return path


def run_job(cfg: DictConfig, task: Callable[[DictConfig], dict[str, float]]) -> float | None:
    """Run ``task`` as one job of a Hydra run or multirun and write its ``job.json``.

    Returns:
        The optimized metric (``cfg.optimized_metric``) for the sweeper, or None when the job
        failed. None, not NaN: the Optuna sweeper marks a trial whose value is not a float as
        failed and goes on, while a NaN value makes its ``study.tell`` raise.

    Raises:
        The task's exception, in a single (non-multirun) run only.
    """
    record, error = job_record(cfg, task)
    if rank_zero_only.rank == 0:  # one record per job, also under DDP
        write_record(record, HydraConfig.get().runtime.output_dir)
    if error is not None and HydraConfig.get().mode != RunMode.MULTIRUN:
        raise error
    return record["metrics"][record["metric"]] if record["status"] == OK and record["metric"] else None
