"""The data and report settings of ``retina eval`` and ``retina report`` from their
``data=NAME``, ``data.KEY=VALUE`` and ``report.KEY=VALUE`` options (conf/eval.yaml)."""

from __future__ import annotations

import tempfile
from typing import Any

from omegaconf import DictConfig, OmegaConf

from retina.cli import check_group_choice, check_overrides, fail, unset_keys
from retina.training.config import compose_run


def compose_evaluation(data: str | None, prefixed: list[str], example: str
                       ) -> tuple[DictConfig | None, dict[str, Any]]:
    """``(data, report)``: the data config to evaluate on (``data=NAME`` with its keys: a whole
    config; keys alone: a partial one that changes the checkpoint's own; None: the
    checkpoint's) and the report's settings. A bad name, key or value is one line (exit 2).
    """
    report_args = [a for a in prefixed if a.startswith("report.")]
    data_args = [a for a in prefixed if a.startswith("data.")]
    if data is not None:
        check_group_choice("data", data, example)
    group = [f"data={data}"] if data else []
    with tempfile.TemporaryDirectory() as tmp:  # nothing is written there: composing only
        check_overrides(compose_run(group, tmp, name="eval"),
                        report_args + (data_args if data else []), example)
        cfg = compose_run([*report_args, *group, *(data_args if data else [])], tmp,
                          name="eval")
    report = OmegaConf.to_container(cfg.report, resolve=True)
    if data is None:
        return (OmegaConf.from_dotlist(data_args).data if data_args else None), report
    missing = [f"data.{k}" for k in unset_keys(cfg.data)]
    if missing:
        fail(f"data={data} needs {', '.join(k + '=...' for k in missing)}", example)
    return cfg.data, report
