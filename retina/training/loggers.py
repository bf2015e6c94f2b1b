"""Lightning loggers from the ``logger`` config group (``logger=csv|tensorboard|wandb|mlflow``).

Each logger's package is checked before anything is built, so a missing one stops the run at
start-up with the command that installs it, not minutes later inside Lightning.
"""

from __future__ import annotations

import importlib.util
import os

from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger, WandbLogger
from omegaconf import DictConfig

# Logger class (the last part of its ``_target_``) -> (modules it can use, what installs one).
PACKAGES = {
    "TensorBoardLogger": (("tensorboard", "tensorboardX"), "pip install tensorboard"),
    "WandbLogger": (("wandb",), "pip install wandb"),
    "MLFlowLogger": (("mlflow",), "pip install mlflow"),
}


# MLflow 3 refuses its file store (``file:`` tracking URIs, in "maintenance mode") unless this
# variable is true; conf/logger/mlflow.yaml keeps the run's MLflow files in the run directory.
MLFLOW_FILE_STORE_ENV = "MLFLOW_ALLOW_FILE_STORE"


class MissingLoggerPackage(ModuleNotFoundError):
    """A configured logger's package is not installed; the message says what to install."""


def check_logger_package(name: str, target: str) -> None:
    """Raise :class:`MissingLoggerPackage` if the logger ``target`` (a ``_target_``) cannot
    import its package; ``name`` is its key in the ``logger`` config."""
    modules, install = PACKAGES.get(target.rsplit(".", 1)[-1], ((), ""))
    if modules and not any(importlib.util.find_spec(m) for m in modules):
        raise MissingLoggerPackage(
            f"logger.{name} ({target}) needs the {modules[0]} package, which is not installed: "
            f"{install}"
        )


def build_loggers(configs: DictConfig | None) -> list[Logger]:
    """The loggers of a ``logger`` config (``{name: {_target_: ..., ...}}``; null entries are
    left out), after checking that every one's package is installed."""
    configs = {name: c for name, c in (configs or {}).items() if c}
    for name, c in configs.items():
        check_logger_package(name, c["_target_"])
        if str(c.get("tracking_uri") or "").startswith("file:"):
            os.environ.setdefault(MLFLOW_FILE_STORE_ENV, "true")
    return [instantiate(c) for c in configs.values()]


def finish_loggers(loggers: list[Logger]) -> None:
    """End what a logger leaves open after ``fit``: the W&B run (its offline files are
    complete only then, and the next run in this process, a sweep's, starts its own)."""
    if any(isinstance(logger, WandbLogger) for logger in loggers):
        import wandb

        wandb.finish()
