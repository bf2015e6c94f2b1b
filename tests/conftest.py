import pytest
from omegaconf import DictConfig

from retina.training.config import compose_run

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


@pytest.fixture
def tiny_cfg(tmp_path):
    def make(*overrides: str, name: str = "train") -> DictConfig:
        return compose_run([*TINY, *overrides] if name == "train" else overrides, tmp_path / "run", name)

    return make
