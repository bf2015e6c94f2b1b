"""Summary of a Hydra multirun: ``sweep.csv``, ``sweep.md`` and ``sweep.png`` in its directory.

Written at the end of every ``retina train -m ...`` by the Hydra callback
:class:`SweepSummary` (``hydra.callbacks.sweep_summary`` in conf/train.yaml), or afterwards
for any multirun directory::

    retina sweep-report outputs/train_multirun/2026-11-29_12-00-00 [metric=val/mAP_50]

(or ``python -m retina.sweeps.report ...``).

Each job directory's ``job.json`` (retina.sweeps.job) gives its overrides, status, error, wall
time and metrics; a directory without one (older runs) is read from Hydra's
``.hydra/overrides.yaml`` and the run's ``metrics.json``.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import sys
from pathlib import Path

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from retina.cli import fail, parse_options, print_usage, split_positional, wants_help
from retina.options import SweepReportOptions
from retina.sweeps.job import FAILED, JOB_FILE, OK, direction
from retina.sweeps.plot import plot_sweep, short

log = logging.getLogger(__name__)

# metrics the markdown table shows after the optimized one (the csv has them all)
TABLE_METRICS = ("val/mAP", "val/mAP_50", "val/mAP_75", "val/AR_100")


def load_job(job_dir: Path) -> dict | None:
    """The record of one job directory: its ``job.json``, or one rebuilt from Hydra's
    ``.hydra/overrides.yaml`` and ``metrics.json``; None if the directory is not a job."""
    if (job_dir / JOB_FILE).is_file():
        return json.loads((job_dir / JOB_FILE).read_text())
    overrides_file = job_dir / ".hydra" / "overrides.yaml"
    if not overrides_file.is_file():
        return None
    metrics_file = job_dir / "metrics.json"
    ok = metrics_file.is_file()
    return {
        "job": int(job_dir.name) if job_dir.name.isdigit() else job_dir.name,
        "overrides": yaml.safe_load(overrides_file.read_text()) or [],
        "status": OK if ok else FAILED,
        "error": "" if ok else "no job.json and no metrics.json (crashed or still running?)",
        "wall_s": None,
        "metric": None,
        "direction": None,
        "metrics": json.loads(metrics_file.read_text()) if ok else {},
    }


def collect(sweep_dir: str | Path) -> list[dict]:
    """The records of every job directory directly under ``sweep_dir``, by job number."""
    if not Path(sweep_dir).is_dir():
        raise FileNotFoundError(f"{sweep_dir}: no such multirun directory")
    records = [r for d in Path(sweep_dir).iterdir() if d.is_dir() and (r := load_job(d))]
    if not records:
        raise FileNotFoundError(f"{sweep_dir}: no job directories (with job.json or .hydra/)")
    return sorted(records, key=lambda r: (not str(r["job"]).isdigit(), str(r["job"]).zfill(9)))


def parse_overrides(overrides: list[str]) -> dict[str, str]:
    """``["loss.gamma=2", "+x=1"]`` -> ``{"loss.gamma": "2", "x": "1"}``."""
    pairs = (o.split("=", 1) for o in overrides if "=" in o)
    return {key.lstrip("+~"): value for key, value in pairs}


def swept(records: list[dict]) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Overrides that differ between jobs (key -> value per job) and those all jobs share."""
    parsed = [parse_overrides(r["overrides"]) for r in records]
    keys = list(dict.fromkeys(k for p in parsed for k in p))
    varying = {k: [p.get(k, "") for p in parsed] for k in keys}
    fixed = {k: vs[0] for k, vs in varying.items() if len(set(vs)) == 1}
    return {k: vs for k, vs in varying.items() if k not in fixed}, fixed


def metric_value(record: dict, metric: str) -> float | None:
    """The record's ``metric`` if the job is ok and the value finite, else None."""
    value = record["metrics"].get(metric) if record["status"] == OK else None
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None


def ranked(records: list[dict], metric: str, maximize: bool = True) -> list[dict]:
    """Best first by ``metric``; jobs without a value (failed) last, by job number."""
    sign = -1.0 if maximize else 1.0

    def key(r: dict):
        value = metric_value(r, metric)
        return (value is None, sign * value if value is not None else 0.0)

    return sorted(records, key=key)  # stable: ties keep the job order


def write_csv(records: list[dict], path: str | Path) -> Path:
    """One row per job: job, status, overrides, each override key, every metric, wall_s, error."""
    params = list(dict.fromkeys(k for r in records for k in parse_overrides(r["overrides"])))
    metrics = sorted({k for r in records for k in r["metrics"]})
    header = ["job", "status", "overrides", *params, *metrics, "wall_s", "error"]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for r in records:
            parsed = parse_overrides(r["overrides"])
            writer.writerow([
                r["job"], r["status"], " ".join(r["overrides"]),
                *(parsed.get(k, "") for k in params),
                *(r["metrics"].get(k, "") for k in metrics),
                "" if r.get("wall_s") is None else r["wall_s"], r.get("error", ""),
            ])
    return Path(path)


def _cell(text: str, limit: int = 120) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _epochs(metrics: dict) -> str:
    """``"12"``, or ``"3 of 30, stopped early"`` for a job that a limit cut short."""
    done = str(metrics.get("epoch", ""))
    if metrics.get("stopped_early"):
        return f"{done} of {metrics.get('epochs_planned')}, stopped early"
    return done


def to_markdown(records: list[dict], metric: str, maximize: bool = True, title: str = "") -> str:
    """The sweep as a markdown table, best ``metric`` first and failed jobs last."""
    params, fixed = swept(records)
    shown = [metric, *(m for m in TABLE_METRICS if m != metric and any(m in r["metrics"] for r in records))]
    n_failed = sum(metric_value(r, metric) is None for r in records)
    lines = [
        f"# Sweep {title}".rstrip(),
        "",
        f"{len(records)} jobs: {len(records) - n_failed} ok, {n_failed} failed. "
        f"Sorted by `{metric}` ({'maximize' if maximize else 'minimize'}), best first.",
    ]
    if fixed:
        lines += ["", "All jobs: `" + " ".join(f"{k}={v}" for k, v in fixed.items()) + "`"]
    header = ["rank", "job", *params, *shown, "epoch", "wall_s", "status", "error"]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for rank, r in enumerate(ranked(records, metric, maximize), 1):
        parsed = parse_overrides(r["overrides"])
        values = [r["metrics"].get(m) for m in shown]
        lines.append("| " + " | ".join([
            str(rank) if metric_value(r, metric) is not None else "-", str(r["job"]),
            *(_cell(short(parsed.get(k, ""))) for k in params),
            *(f"{v:.4f}" if isinstance(v, (int, float)) else "" for v in values),
            _epochs(r["metrics"]),
            "" if r.get("wall_s") is None else f"{r['wall_s']:.1f}",
            r["status"], _cell(r.get("error", "")),
        ]) + " |")
    return "\n".join(lines) + "\n"


def summarize(sweep_dir: str | Path, metric: str | None = None, maximize: bool | None = None) -> dict[str, Path]:
    """Write ``sweep.csv``, ``sweep.md`` and ``sweep.png`` into ``sweep_dir``.

    Args:
        sweep_dir: a Hydra multirun directory (its job directories directly below it).
        metric: the metric to rank and plot; default: the jobs' ``optimized_metric``, else
            ``val/mAP``.
        maximize: default: the sweeper's direction recorded by the jobs, else True.

    Returns:
        ``{"csv": path, "md": path, "png": path}``.
    """
    sweep_dir = Path(sweep_dir)
    records = collect(sweep_dir)
    metric = metric or next((r["metric"] for r in records if r.get("metric")), None) or "val/mAP"
    if maximize is None:
        recorded = next((r["direction"] for r in records if r.get("direction")), "maximize")
        maximize = direction(recorded) == "maximize"
    params, _ = swept(records)
    out = {
        "csv": write_csv(records, sweep_dir / "sweep.csv"),
        "md": sweep_dir / "sweep.md",
        "png": plot_sweep(params, [metric_value(r, metric) for r in records], metric, sweep_dir / "sweep.png"),
    }
    out["md"].write_text(to_markdown(records, metric, maximize, title=sweep_dir.name))
    return out


class SweepSummary(Callback):
    """Hydra callback: the sweep summary in the multirun directory once all jobs are done."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep = config.hydra.sweep.dir
        metric = config.get("optimized_metric")
        files = summarize(sweep, metric, direction(config.hydra.sweeper.get("direction")) == "maximize")
        log.info("sweep summary: %s", ", ".join(str(p) for p in files.values()))
        log.info("\n%s", files["md"].read_text())


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if wants_help(args):
        return print_usage("sweep-report")
    example = "retina sweep-report outputs/train_multirun/<date> metric=val/mAP_50"
    (sweep_dir,), rest = split_positional(args, 1, "the multirun directory", example)
    opts = parse_options(SweepReportOptions, rest, example)
    try:
        files = summarize(sweep_dir, opts.metric, False if opts.minimize else None)
    except (ValueError, FileNotFoundError) as err:
        fail(str(err))
    print(files["md"].read_text())
    print("\n".join(str(p) for p in files.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
