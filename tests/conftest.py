from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# Small and fast: NEON tiles at 128 px, a thin head, no workers.
TINY = [
    "data.size=128",
    "data.num_workers=0",
    "data.batch_size=2",
    "model.detector.head.channels=32",
    "model.detector.head.num_convs=1",
    "model.detector.fpn_channels=32",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


def compose_config(tmp_path: Path, overrides: list[str], name: str = "train") -> DictConfig:
    """The real composed config, with outputs under tmp_path (as @hydra.main would set up)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose(name, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.root_dir = str(ROOT)
        cfg.paths.log_dir = str(tmp_path / "outputs")
        cfg.paths.output_dir = str(tmp_path / "run")
        cfg.hydra.runtime.output_dir = str(tmp_path / "run")
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    return cfg


@pytest.fixture
def tiny_cfg(tmp_path):
    def make(*overrides: str, name: str = "train") -> DictConfig:
        return compose_config(tmp_path, [*TINY, *overrides] if name == "train" else list(overrides), name)

    return make
