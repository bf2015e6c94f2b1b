"""retina.analysis.explore on tiny inputs (on a trained model: e2e/test_explore.py)."""

import json
import math
import os
import time

import pytest
import torch

from retina.analysis import explore
from retina.analysis.explore import (
    DistributionPostprocess,
    anchor_targets,
    first_losses,
    focal_curves,
    loss_share_by_pt,
    newest_train_checkpoint,
    quickstart_checkpoint,
    score_floor,
    text_table,
)
from retina.ops.boxes import DistanceCoder
from retina.ops.postprocess import Postprocess
from retina.training.run import build


def test_focal_curves_match_the_formula():
    p_t = torch.tensor([0.1, 0.5, 0.9])
    curves = focal_curves(p_t, [0, 2])
    ce = -torch.log(p_t)
    assert curves[0] == pytest.approx(ce, rel=1e-5)  # gamma 0: cross entropy
    assert curves[2] == pytest.approx((1 - p_t) ** 2 * ce, rel=1e-5)
    # p_t 0.9: (0.1)^2 = 1/100 of the cross entropy
    assert float(curves[2][2] / curves[0][2]) == pytest.approx(0.01, rel=1e-4)
    assert focal_curves(p_t, [0], alpha=0.25)[0] == pytest.approx(0.25 * ce, rel=1e-5)
    # a negative scored 1 - p_t: same curve, weighted 1 - alpha
    assert focal_curves(p_t, [2], alpha=0.25, positive=False)[2] == pytest.approx(
        0.75 * (1 - p_t) ** 2 * ce, rel=1e-4)


def test_text_table_aligns_and_rounds():
    rows = [{"name": "a", "v": 0.12345, "n": 3}, {"name": "long", "v": 10.0, "n": 12}]
    assert text_table(rows, digits=2).splitlines() == [
        "name      v   n",
        "   a   0.12   3",
        "long  10.00  12",
    ]
    assert text_table([]) == ""


def test_score_floor_lowers_the_threshold_only_when_too_few_pass():
    dets = [{"scores": torch.tensor([0.9, 0.5, 0.1])}, {"scores": torch.tensor([0.3, 0.05])}]
    assert score_floor(dets, cap=0.2, keep=2) == 0.2  # 0.9, 0.5, 0.3 pass already
    assert score_floor(dets, cap=0.2, keep=4) == pytest.approx(0.1)  # the 4th best
    assert score_floor(dets, cap=0.6, keep=2) == 0.5
    assert score_floor([], cap=0.2) == 0.2


def test_loss_share_by_pt_counts_each_anchor_once_and_shares_sum_to_one():
    # two easy negatives (p = 0.1 -> p_t 0.9), one hard negative (p 0.9 -> p_t 0.1),
    # one positive at p 0.5 (p_t 0.5 sits in the upper bin)
    p = torch.tensor([0.1, 0.1, 0.9, 0.5])
    targets = torch.tensor([0.0, 0, 0, 1])
    rows = loss_share_by_pt(torch.logit(p), targets, [0, 0.5, 1], gamma=0, alpha=-1)
    assert [(r["kind"], r["p_t"], r["count"]) for r in rows] == [
        ("neg", "[0, 0.5)", 1), ("neg", "[0.5, 1]", 2), ("pos", "[0, 0.5)", 0), ("pos", "[0.5, 1]", 1)
    ]
    ce_easy, ce_hard, ce_pos = -math.log(0.9), -math.log(0.1), -math.log(0.5)
    total = 2 * ce_easy + ce_hard + ce_pos
    assert [r["share"] for r in rows] == pytest.approx(
        [ce_hard / total, 2 * ce_easy / total, 0, ce_pos / total], rel=1e-5)
    # focal loss (gamma 2) shrinks the easy negatives' share: 0.1^2 vs 0.9^2 of the CE
    focal = loss_share_by_pt(torch.logit(p), targets, [0, 0.5, 1], gamma=2, alpha=-1)
    assert focal[1]["share"] < rows[1]["share"] / 10


def test_distribution_postprocess_adds_the_side_probabilities_of_each_detection():
    coder = DistanceCoder(reg_max=4, anchor_scale=2.0)
    # one level of 2x2 locations, stride 8: anchors of side 16 centred at (4 + 8 i, 4 + 8 j)
    centres = torch.tensor([[4.0, 4], [12, 4], [4, 12], [12, 12]])
    anchors = torch.cat([centres - 8, centres + 8], dim=1)  # (4, 4)
    torch.manual_seed(0)
    cls_map = torch.full((1, 1, 2, 2), -9.0)
    cls_map[0, 0, 1, 0] = 3.0  # only location (y=1, x=0) scores
    box_map = torch.randn(1, 4 * 5, 2, 2)
    plain = Postprocess(coder, score_thresh=0.5)
    post = DistributionPostprocess.like(plain)
    sizes = torch.tensor([[16, 16]])
    (det,), (ref,) = post([cls_map], [box_map], [anchors], sizes), plain([cls_map], [box_map], [anchors], sizes)
    assert torch.equal(det["boxes"], ref["boxes"]) and torch.equal(det["spread"], ref["spread"])
    expected = box_map[0, :, 1, 0].view(4, 5).softmax(-1)  # (4, R+1) of that location
    assert torch.allclose(det["probs"][0], expected)
    assert det["side_px"].tolist() == [[8.0] * 4]  # stride = anchor side 16 / anchor_scale 2
    with pytest.raises(ValueError, match="GFL"):
        DistributionPostprocess.like(Postprocess(object()))


def _fake_ckpt(path, head):
    path.parent.mkdir(parents=True, exist_ok=True)
    run = {"model": {"detector": {"head": {"_target_": f"retina.model.x.{head}"}}}}
    torch.save({"state_dict": {}, "hyper_parameters": {"run_config": json.dumps(run)}}, path)


def test_newest_train_checkpoint_by_time_and_head(tmp_path):
    assert newest_train_checkpoint(tmp_path) is None
    old, new = (tmp_path / "train" / d / "checkpoints" / "best.ckpt" for d in ("a", "b"))
    _fake_ckpt(old, "GFLHead")
    _fake_ckpt(new, "RetinaHead")
    os.utime(old, (time.time() - 100, time.time() - 100))
    assert newest_train_checkpoint(tmp_path) == new
    assert newest_train_checkpoint(tmp_path, head="GFLHead") == old
    assert newest_train_checkpoint(tmp_path, head="Other") is None


def test_quickstart_checkpoint_trains_once_and_reuses_the_cache(tmp_path, monkeypatch):
    calls = []

    def fake_train(out_dir, overrides):
        calls.append(overrides)
        _fake_ckpt(out_dir / "checkpoints" / "best.ckpt", "GFLHead")
        return out_dir / "checkpoints" / "best.ckpt"

    monkeypatch.setattr(explore, "train_quickstart", fake_train)
    monkeypatch.delenv(explore.QUICKSTART_ENV, raising=False)
    out = tmp_path / "nb"
    first = quickstart_checkpoint(tmp_path / "logs", out, ("a=1",))
    assert quickstart_checkpoint(tmp_path / "logs", out, ("a=1",)) == first and len(calls) == 1
    quickstart_checkpoint(tmp_path / "logs", out, ("a=2",))  # other settings: train again
    assert calls == [("a=1",), ("a=2",)]
    # a `make train` GFL checkpoint wins over the cache
    made = tmp_path / "logs" / "train" / "x" / "checkpoints" / "best.ckpt"
    _fake_ckpt(made, "GFLHead")
    assert quickstart_checkpoint(tmp_path / "logs", out, ("a=2",)) == made
    # a file named by the environment wins over both, and a wrong name is an error naming it
    named = tmp_path / "named.ckpt"
    _fake_ckpt(named, "GFLHead")
    monkeypatch.setenv(explore.QUICKSTART_ENV, str(named))
    assert quickstart_checkpoint(tmp_path / "logs", out, ("a=2",)) == named
    monkeypatch.setenv(explore.QUICKSTART_ENV, str(tmp_path / "gone.ckpt"))
    with pytest.raises(FileNotFoundError, match="gone.ckpt"):
        quickstart_checkpoint(tmp_path / "logs", out, ("a=2",))
    assert len(calls) == 2  # no training for either


def test_first_losses_prior_init_and_focal_loss_shrink_the_first_loss(tiny_cfg):
    # the head's random init and the shuffled batch set how near 0.5 p is (checked below to
    # 5 %): seeded, not left to whatever test ran before
    torch.manual_seed(0)
    datamodule, module = build(tiny_cfg("experiment=neon_retinanet"))
    batch = next(iter(datamodule.train_dataloader()))
    bias = module.detector.head.cls_pred.bias.clone()
    losses = first_losses(module, batch, prior_prob=0.01, gamma=2.0)
    assert torch.equal(module.detector.head.cls_pred.bias, bias) and module.criterion.gamma == 2.0
    # zero bias: p = 0.5 everywhere, so each negative costs 0.75 * log 2 under CE
    assert losses["zero bias, CE"] > 10 * losses["prior, CE"]
    assert losses["prior, focal"] < losses["prior, CE"]
    # p is only near 0.5 (the conv weights are small, not 0): focal ~ 0.5^2 of CE
    assert losses["zero bias, focal"] == pytest.approx(0.25 * losses["zero bias, CE"], rel=0.05)
    logits, targets = anchor_targets(module, batch)
    assert logits.shape == targets.shape and set(targets.unique().tolist()) == {0.0, 1.0}
    # the anchor targets reproduce the module's own loss_cls (focal, normalised by positives)
    from retina.losses.functional import sigmoid_focal_loss

    with torch.no_grad():
        ours = sigmoid_focal_loss(logits, targets, 0.25, 2.0, "sum") / targets.sum().clamp(min=1)
        assert float(ours) == pytest.approx(float(module.losses(batch)["loss_cls"]), rel=1e-4)
