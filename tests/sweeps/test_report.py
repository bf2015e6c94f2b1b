"""retina.sweeps.report: the sweep summary (csv, markdown) from per-job records."""

import csv
import json

import pytest

from retina.sweeps.report import collect, ranked, summarize, swept, to_markdown, write_csv
from tests.helpers import RECORDS, record


def test_ranked_best_first_failed_last():
    assert [r["job"] for r in ranked(RECORDS, "val/mAP")] == [1, 3, 0, 2]
    assert [r["job"] for r in ranked(RECORDS, "val/mAP", maximize=False)] == [0, 3, 1, 2]
    # an ok job whose metric is NaN (diverged without raising) ranks with the failed ones
    nan = record(4, 5, 0.5, float("nan"))
    assert [r["job"] for r in ranked([nan, *RECORDS], "val/mAP")] == [1, 3, 0, 4, 2]


def test_swept_and_fixed_overrides():
    params, fixed = swept(RECORDS)
    assert params == {"loss.gamma": ["0", "0", "2", "2"], "loss.alpha": ["0.25", "0.75", "0.25", "0.75"]}
    assert fixed == {"experiment": "neon_retinanet"}


def test_csv_has_one_row_per_job_with_every_metric(tmp_path):
    with open(write_csv(RECORDS, tmp_path / "sweep.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["job"] for r in rows] == ["0", "1", "2", "3"]
    assert list(rows[0]) == [
        "job", "status", "overrides", "experiment", "loss.gamma", "loss.alpha",
        "epoch", "val/mAP", "val/mAP_50", "wall_s", "error",
    ]
    assert rows[1]["overrides"] == "experiment=neon_retinanet loss.gamma=0 loss.alpha=0.75"
    assert (rows[1]["loss.gamma"], rows[1]["loss.alpha"]) == ("0", "0.75")
    assert float(rows[1]["val/mAP"]) == 0.30 and float(rows[1]["val/mAP_50"]) == 0.60
    assert rows[2]["status"] == "failed" and rows[2]["val/mAP"] == ""
    assert rows[2]["error"] == "ValueError: loss diverged | nan" and rows[2]["wall_s"] == "1.5"


def test_markdown_table_sorted_with_failed_last():
    md = to_markdown(RECORDS, "val/mAP", title="grid")
    lines = md.splitlines()
    assert lines[0] == "# Sweep grid"
    assert "4 jobs: 3 ok, 1 failed" in md and "All jobs: `experiment=neon_retinanet`" in md
    table = [line for line in lines if line.startswith("| ")]
    assert table[0] == ("| rank | job | loss.gamma | loss.alpha | val/mAP | val/mAP_50 | epoch | wall_s"
                        " | status | error |")
    assert table[1] == "| 1 | 1 | 0 | 0.75 | 0.3000 | 0.6000 | 3 | 10.0 | ok |  |"
    assert [row.split(" | ")[1] for row in table[1:]] == ["1", "3", "0", "2"]
    assert table[-1] == "| - | 2 | 2 | 0.25 |  |  |  | 1.5 | failed | ValueError: loss diverged \\| nan |"


def test_summary_reads_old_runs_without_job_json(tmp_path):
    for job, (gamma, mAP) in enumerate([(0, 0.4), (2, None)]):
        (tmp_path / str(job) / ".hydra").mkdir(parents=True)
        (tmp_path / str(job) / ".hydra" / "overrides.yaml").write_text(f"- loss.gamma={gamma}\n")
        if mAP is not None:
            (tmp_path / str(job) / "metrics.json").write_text(json.dumps({"val/mAP": mAP}))
    (tmp_path / ".submitit").mkdir()  # not a job
    records = collect(tmp_path)
    assert [(r["job"], r["status"], r["metrics"]) for r in records] == [
        (0, "ok", {"val/mAP": 0.4}), (1, "failed", {})]
    files = summarize(tmp_path)
    assert "| 1 | 0 | 0 | 0.4000 |" in files["md"].read_text()


def test_summary_of_a_directory_without_jobs_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no job directories"):
        summarize(tmp_path)
    with pytest.raises(FileNotFoundError, match="nope: no such multirun directory"):
        summarize(tmp_path / "nope")
