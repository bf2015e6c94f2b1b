"""logger=csv|tensorboard|wandb|mlflow: each writes its files into the run directory, offline;
a logger whose package is missing stops the run at start-up with the pip command."""

from __future__ import annotations

import sys

import pytest

from retina.training import loggers as loggers_module
from retina.training import run
from retina.training.loggers import MLFLOW_FILE_STORE_ENV, MissingLoggerPackage


def test_every_logger_writes_its_files_in_the_run_directory_offline(tiny_cfg, tmp_path,
                                                                    monkeypatch):
    # wandb offline and silent, its settings and caches in tmp_path: nothing leaves the machine
    for name, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true",
                        "WANDB_DISABLE_GIT": "true"}.items():
        monkeypatch.setenv(name, value)
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    monkeypatch.setenv(MLFLOW_FILE_STORE_ENV, "")  # so that the teardown removes what train sets
    monkeypatch.delenv(MLFLOW_FILE_STORE_ENV)
    # one run with all four (a list of options for the group): the loggers combine
    run.train(tiny_cfg("debug=fdr", "logger=[csv,tensorboard,wandb,mlflow]"))
    out = tmp_path / "run"

    assert "val/mAP" in (out / "csv/version_0/metrics.csv").read_text()

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = (out / "tensorboard/version_0").glob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    assert {"train/loss", "val/mAP"} <= set(accumulator.Tags()["scalars"])

    (wandb_run,) = (out / "wandb").glob("offline-run-*/run-*.wandb")  # offline: the run file
    assert b"val/mAP" in wandb_run.read_bytes()

    (mlflow_run,) = (out / "mlruns").glob("*/*/meta.yaml")  # the file store, in the run
    metrics = mlflow_run.parent / "metrics"
    assert (metrics / "val/mAP").is_file() and (metrics / "train/loss").is_file()


@pytest.mark.parametrize(("logger", "modules", "command"), [
    ("tensorboard", ["tensorboard", "tensorboardX"], "pip install tensorboard"),
    ("wandb", ["wandb"], "pip install wandb"),
    ("mlflow", ["mlflow"], "pip install mlflow"),
])
def test_a_missing_logger_package_stops_the_run_at_start_with_the_pip_command(
        tiny_cfg, monkeypatch, logger, modules, command):
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    monkeypatch.setattr(run, "build", lambda cfg: pytest.fail("the data was set up first"))
    with pytest.raises(MissingLoggerPackage) as err:
        run.train(tiny_cfg(f"logger={logger}"))
    message = str(err.value)
    assert "\n" not in message and message.endswith(command)
    assert f"logger.{logger} " in message and "not installed" in message
    loggers_module.check_logger_package("csv", "lightning.pytorch.loggers.CSVLogger")  # none
