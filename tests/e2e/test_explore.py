"""retina.analysis.explore on the session's tiny GFL model (tests/conftest.py)."""

import pytest
import torch

from retina.analysis.explore import (
    detections_with_distributions,
    load_module,
    predict_val,
    val_detections,
    val_examples,
    validate,
)
from tests.helpers import TRAINED_SIZE


def test_load_module_predicts_like_training_and_distributions_explain_the_spread(trained_gfl):
    module, dm = load_module(trained_gfl.ckpt)
    assert not module.training and dm.val_dataset is not None
    images, gts = val_examples(dm, [0, 1])
    assert images[0].dtype == torch.uint8 and tuple(images[0].shape[1:]) == (400, 400)  # stored tiles
    assert gts[0].shape[1] == 4 and len(gts[0]) > 0
    dets = predict_val(module, dm, [0, 1])
    assert all(len(d["boxes"]) > 0 for d in dets)  # something to compare below
    batch = dm.collate_fn([dm.val_dataset[0], dm.val_dataset[1]])
    with_probs = detections_with_distributions(module, batch)
    for d, ref in zip(with_probs, dets):
        assert torch.equal(d["boxes"], ref["boxes"]) and torch.equal(d["scores"], ref["scores"])
        # std of each side's distribution, in bins times pixels per bin, is the spread
        bins = torch.arange(d["probs"].shape[-1], dtype=torch.float32)
        mean = (d["probs"] * bins).sum(-1, keepdim=True)
        std = ((d["probs"] * (bins - mean) ** 2).sum(-1)).sqrt()
        assert torch.allclose(std * d["side_px"], d["spread"], rtol=1e-4, atol=1e-4)
    # side_px is in original pixels: stride 8 (P3) at 160 px input -> 8 * 400 / 160 = 20
    strides = {8 * 2**i * 400 / TRAINED_SIZE for i in range(5)}
    assert set(with_probs[0]["side_px"].unique().tolist()) <= strides
    ids, all_dets = val_detections(module, dm, limit=3)
    assert ids == dm.val_dataset.image_ids[:3] and len(all_dets) == 3
    metrics, table = validate(module, dm)
    assert "Average Precision  (AP) @[ IoU=0.50:0.95" in table
    for key in ("val/mAP", "val/mAP_50", "val/AR_100"):  # the rebuilt module is the trained one
        assert metrics[key] == pytest.approx(trained_gfl.metrics[key], abs=1e-6), key


def test_validate_of_a_rebuilt_retinanet_gives_its_training_numbers(trained_retinanet):
    module, dm = load_module(trained_retinanet.ckpt)
    metrics, _ = validate(module, dm)
    assert metrics["val/AR_100"] > 0  # boxes near the anchors: numbers that can differ
    for key in ("val/mAP", "val/mAP_50", "val/AR_100"):
        assert metrics[key] == pytest.approx(trained_retinanet.metrics[key], abs=1e-6), key
