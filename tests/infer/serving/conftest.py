"""A fake model for the serving tests: the HTTP side runs for real, the network does not
(the runs on trained models are in tests/e2e/test_serve.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from retina.infer.serving.model import Served

NAMES, CAT_IDS = ["tree", "shrub"], [1, 7]


class FakePredictor:
    """Three boxes per image at fixed fractions of its size; ``calls`` records the batches."""

    class_names, cat_ids = NAMES, CAT_IDS
    meta = SimpleNamespace(
        class_names=NAMES, cat_ids=CAT_IDS, size=64, min_size=None, max_size=None,
        resize="antialias", graph_input_size=None,
        model={"postprocess": {"score_thresh": 0.05, "nms_thresh": 0.5, "max_det": 100}})

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.tiles: list[int] = []

    def __call__(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        self.calls.append(len(images))
        return [self.detections(im) for im in images]

    def predict_large(self, image: torch.Tensor, tile: int, batch_size: int = 4):
        self.tiles.append(tile)
        return self.detections(image)

    @staticmethod
    def detections(image: torch.Tensor) -> dict[str, torch.Tensor]:
        h, w = image.shape[-2:]
        frac = torch.tensor([[0.1, 0.1, 0.5, 0.5], [0.5, 0.5, 0.9, 0.8], [0.0, 0.0, 0.2, 0.1]])
        return {"boxes": frac * torch.tensor([w, h, w, h]), "scores": torch.tensor([0.9, 0.6, 0.2]),
                "labels": torch.tensor([0, 1, 0])}


@pytest.fixture
def served() -> Served:
    return Served(FakePredictor(), Path("fake.ckpt"), "checkpoint", "eager", "cpu")
