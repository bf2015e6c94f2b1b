"""Safe resume: which file ``ckpt_path=last`` means, and whether a checkpoint belongs to the
run being continued.

A checkpoint stores its resolved run config (``retina.training.checkpoint.run_config``);
resuming compares it with the current one and refuses when they differ in anything but the
keys of :data:`MAY_CHANGE` (how long the run goes, where it writes, what it logs and shows),
listing the differing keys. ``resume.force=true`` resumes anyway, with a warning.
"""

from __future__ import annotations

import fnmatch
import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from retina.training.checkpoint import load_checkpoint, run_config

log = logging.getLogger(__name__)

# Dotted keys (fnmatch patterns; a pattern also covers everything below it) that may differ
# between a checkpoint's run and the run resuming it.
MAY_CHANGE = (
    "trainer.max_epochs", "trainer.min_epochs", "trainer.max_steps", "trainer.min_steps",
    "trainer.max_time", "trainer.limit_*_batches", "trainer.enable_progress_bar",
    "trainer.enable_model_summary", "paths", "hydra", "ckpt_path", "resume", "logger",
    "data.cache_dir", "threads", "data.num_workers",  # how the machine runs it, not what
    "early_stop",
)
ABSENT = "(absent)"
# How many characters of a differing value the message shows.
SHOWN_CHARS = 80


class ResumeError(ValueError):
    """A resume that would continue a different run, or an ambiguous ``ckpt_path=last``."""


def resolve_ckpt(ckpt_path: str | None, run_dir: str | Path, runs_dir: str | Path) -> str | None:
    """The checkpoint file to resume from.

    ``"last"``: the newest ``last.ckpt`` under ``run_dir`` (the run directory of this run,
    ``hydra.run.dir=...``); if it holds none, the one ``<runs_dir>/*/checkpoints/last.ckpt``,
    refusing when several runs hold one. Any other value is a checkpoint file.

    Raises:
        FileNotFoundError: no such file, or no ``last.ckpt`` to resume.
        ResumeError: ``"last"`` and several runs of ``runs_dir`` hold one (listed).
    """
    if ckpt_path != "last":
        if ckpt_path and not Path(ckpt_path).is_file():
            raise FileNotFoundError(f"ckpt_path={ckpt_path}: no such checkpoint file")
        return ckpt_path
    own = sorted(Path(run_dir).rglob("last.ckpt"), key=lambda p: p.stat().st_mtime)
    if own:
        return str(own[-1])
    found = sorted(Path(runs_dir).glob("*/checkpoints/last.ckpt"),
                   key=lambda p: p.stat().st_mtime, reverse=True)
    if not found:
        raise FileNotFoundError(f"ckpt_path=last: no last.ckpt in {run_dir} or under {runs_dir}")
    if len(found) > 1:
        runs = "\n".join(f"  {p.parents[1]}" for p in found)
        raise ResumeError(
            f"ckpt_path=last: {len(found)} runs under {runs_dir} hold a last.ckpt; name the one "
            f"to resume with hydra.run.dir=RUN ckpt_path=last (or ckpt_path=FILE). "
            f"Newest first:\n{runs}"
        )
    return str(found[0])


def may_change(key: str) -> bool:
    """Whether a resumed run may change ``key`` (a dotted config key), see :data:`MAY_CHANGE`."""
    return any(fnmatch.fnmatchcase(key, p) or fnmatch.fnmatchcase(key, p + ".*")
               for p in MAY_CHANGE)


def config_differences(old: Any, new: Any, key: str = "") -> list[tuple[str, Any, Any]]:
    """``(dotted key, old value, new value)`` of every difference between two plain configs;
    a section only one side has is one difference (its value, :data:`ABSENT` on the other)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [diff for k in [*old, *(k for k in new if k not in old)]
                for diff in config_differences(old.get(k, ABSENT), new.get(k, ABSENT),
                                               f"{key}.{k}" if key else str(k))]
    return [] if old == new else [(key, old, new)]


def comparable_config(cfg: DictConfig, paths: dict | None) -> dict:
    """``cfg`` resolved as a checkpoint stores it (no ``hydra`` node), with ``paths`` set to
    the checkpoint's own, so that values built from them (the data folders) compare equal
    when only the run directory or the checkout moved."""
    current = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    if paths is not None:
        with open_dict(current):
            current.paths = paths
    return OmegaConf.to_container(current, resolve=True)


def _shown(value: Any) -> str:
    text = value if value is ABSENT else json.dumps(value)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..."


def check_resume(ckpt_path: str | Path, cfg: DictConfig, force: bool = False) -> None:
    """Refuse to resume ``ckpt_path`` when its stored run config differs from ``cfg`` (as
    built: after ``retina.training.run.build``) in a key that may not change.

    Raises:
        ResumeError: the differing keys with both values, unless ``force`` (then a warning).
    """
    stored = OmegaConf.to_container(run_config(load_checkpoint(ckpt_path)))
    diffs = [d for d in config_differences(stored, comparable_config(cfg, stored.get("paths")))
             if not may_change(d[0])]
    if not diffs:
        return
    lines = "\n".join(f"  {k}: {_shown(old)} -> {_shown(new)}" for k, old, new in diffs)
    what = (f"{ckpt_path} was trained with a different run config ({len(diffs)} keys, "
            f"checkpoint -> now):\n{lines}")
    if force:
        log.warning("resume.force=true: resuming although %s", what)
        return
    raise ResumeError(
        f"refusing to resume: {what}\nOnly trainer limits (max_epochs, max_steps, max_time, "
        "limit_*), paths and loggers may change on resume; resume.force=true resumes anyway."
    )
