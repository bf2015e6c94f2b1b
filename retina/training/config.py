"""Compose the project's Hydra configs from Python (tests, benchmarks, notebooks)."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from retina.cli import CONF_DIR

# the checkout's top folder (for the tests: an installed package has no such folder)
ROOT = Path(__file__).resolve().parents[2]


def compose_run(overrides: list[str], output_dir: str | Path, name: str = "train") -> DictConfig:
    """The composed config ``retina <name> overrides...`` would get from the current directory
    (data under it, like the commands), writing into ``output_dir``, with Hydra's runtime values
    set so ``${hydra:...}`` resolves."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(name, overrides=list(overrides), return_hydra_config=True)
    output_dir = Path(output_dir)
    with open_dict(cfg):
        cfg.paths.root_dir = str(Path.cwd())
        cfg.paths.log_dir = str(output_dir.parent / "outputs")
        cfg.paths.output_dir = str(output_dir)
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    return cfg
