"""Class-imbalance toolkit for RetinaNet: softmax focal loss, OHEM, GHM-C, class weights."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import open_dict
from torchvision.ops import sigmoid_focal_loss as tv_focal

from retina.data.datamodule import class_frequency_weights
from retina.export.meta import meta_from_checkpoint
from retina.losses.functional import (
    focal_loss_from_labels,
    ghm_bin_index,
    ghm_c_loss,
    ghm_c_weights,
    hard_negatives,
    ohem_cross_entropy,
    softmax_focal_loss,
)
from retina.losses.retinanet import (
    GHMCriterion,
    OHEMCriterion,
    RetinaNetCriterion,
    SoftmaxFocalCriterion,
)
from retina.model.head import RetinaHead
from retina.ops.levels import foreground_logits
from retina.training.checkpoint import load_checkpoint
from retina.training.config import ROOT
from retina.training.run import build, evaluate, train

LN2 = math.log(2.0)


def logit(p: float) -> float:
    return math.log(p / (1 - p))


# ---------------------------------------------------------------- softmax focal loss


def test_softmax_focal_hand_computed():
    # K = 1, logits (0, 0): p_t = 1/2, CE = ln 2, (1 - p_t)^2 = 1/4
    x = torch.zeros(3, 2)
    labels = torch.tensor([0, -1, -2])  # class 0 (channel 1), background, ignored
    loss = softmax_focal_loss(x, labels, alpha=0.25, gamma=2.0)
    torch.testing.assert_close(loss, torch.tensor([0.25 * 0.25 * LN2, 0.75 * 0.25 * LN2, 0.0]))
    # a class weight of 3 multiplies the foreground alpha only
    weighted = softmax_focal_loss(x, labels, 0.25, 2.0, class_weights=torch.tensor([3.0]))
    torch.testing.assert_close(weighted, loss * torch.tensor([3.0, 1.0, 1.0]))


@pytest.mark.parametrize("alpha", [0.25, -1.0])
def test_softmax_focal_gamma_0_is_alpha_t_cross_entropy(alpha):
    torch.manual_seed(0)
    x = torch.randn(50, 4) * 3  # K = 3
    labels = torch.randint(-2, 3, (50,))
    ce = F.cross_entropy(x, labels + 1, ignore_index=-1, reduction="none")  # bg -> 0, ignored -> -1
    alpha_t = torch.where(labels >= 0, alpha, 1 - alpha) if alpha >= 0 else torch.ones(50)
    torch.testing.assert_close(softmax_focal_loss(x, labels, alpha, 0.0), alpha_t * ce)


def test_softmax_focal_down_weights_easy_anchors():
    # p_t = 0.9: the factor (1 - p_t)^2 = 0.01 relative to the cross-entropy
    x = torch.tensor([[0.0, math.log(9.0)]])  # softmax (0.1, 0.9)
    loss = softmax_focal_loss(x, torch.tensor([0]), alpha=-1, gamma=2.0)
    assert loss.item() == pytest.approx(0.01 * -math.log(0.9), rel=1e-5)


# ---------------------------------------------------------------- OHEM


def test_hard_negatives_pick_3_per_foreground_and_the_minimum_without_foreground():
    loss = torch.tensor([
        [9.0, 0.5, 0.1, 0.9, 0.3, 0.7, 8.0, 0.2],
        [0.4, 0.8, 0.6, 0.1, 0.9, 0.2, 0.3, 0.5],
    ])
    fg = torch.zeros(2, 8, dtype=torch.bool)
    fg[0, 0] = True  # image 0: one foreground anchor
    bg = ~fg
    bg[0, 6] = False  # ignored (its loss is the highest but it is no negative)
    chosen = hard_negatives(loss, fg, bg, neg_pos_ratio=3, min_neg=2)
    # image 0: 3 x 1 negatives, the highest of bg: 0.9 (3), 0.7 (5), 0.5 (1)
    # image 1: no foreground, min_neg = 2: 0.9 (4), 0.8 (1)
    assert chosen[0].nonzero().flatten().tolist() == [1, 3, 5]
    assert chosen[1].nonzero().flatten().tolist() == [1, 4]
    # more negatives wanted than there are: all of them
    assert hard_negatives(loss, fg, bg, neg_pos_ratio=100, min_neg=0)[0].tolist() == bg[0].tolist()


def test_ohem_cross_entropy_sums_foreground_and_hard_negatives():
    torch.manual_seed(1)
    x = torch.randn(2, 8, 3)  # K = 2
    labels = torch.tensor([
        [1, -1, -1, -1, -1, -1, -2, 0],  # two foreground anchors: 6 negatives wanted, 5 exist
        [-1, -1, -1, -1, -1, -1, -1, -1],  # none: min_neg = 2
    ])
    ce = F.cross_entropy(x.view(16, 3), (labels + 1).clamp(min=0).view(16), reduction="none").view(2, 8)
    expected = ce[0, [0, 1, 2, 3, 4, 5, 7]].sum() + ce[1].topk(2).values.sum()
    torch.testing.assert_close(ohem_cross_entropy(x, labels, 3.0, min_neg=2), expected)


def test_ohem_criterion_normalises_by_foreground_anchors():
    torch.manual_seed(2)
    anchors = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50], [0, 40, 10, 50]])
    gt = torch.tensor([[[0.0, 0, 10, 10], [20, 20, 30, 30]]])  # anchors 0 and 1 are fg
    cls = torch.randn(1, 4, 2)
    out = OHEMCriterion(neg_pos_ratio=3, min_neg=0)(
        cls, torch.zeros(1, 4, 4), anchors, gt, torch.tensor([[0, 0]])
    )
    ce = F.cross_entropy(cls[0], torch.tensor([1, 1, 0, 0]), reduction="sum")  # every anchor
    assert out["num_fg"] == 2
    torch.testing.assert_close(out["loss_cls"], ce / 2)


# ---------------------------------------------------------------- GHM-C


def ghm_example():
    # targets 0, so g = sigmoid(x); 4 bins [0, .25) [.25, .5) [.5, .75) [.75, 1]
    g = torch.tensor([0.1, 0.1, 0.1, 0.6, 0.9, 0.1])
    x = torch.log(g / (1 - g))
    valid = torch.tensor([True] * 5 + [False])
    return x, torch.zeros(6), valid


def test_ghm_weights_are_the_inverse_gradient_density():
    x, t, valid = ghm_example()
    bin_idx = ghm_bin_index(x, t, 4)
    assert bin_idx.tolist() == [0, 0, 0, 2, 3, 0]
    # N = 5 valid; bins 0, 2, 3 not empty (n = 3) with 3, 1, 1 entries: beta = N / (S_b n)
    w = ghm_c_weights(bin_idx, valid, 4)
    torch.testing.assert_close(w, torch.tensor([5 / 9, 5 / 9, 5 / 9, 5 / 3, 5 / 3, 0.0]))
    # loss = sum beta BCE / N, BCE(x, 0) = -ln(1 - g)
    bce = -torch.log(1 - torch.tensor([0.1, 0.1, 0.1, 0.6, 0.9]))
    expected = (w[:5] * bce).sum() / 5
    torch.testing.assert_close(ghm_c_loss(x, t, valid, bins=4), expected)
    # g = 1 (certainly wrong) falls in the last bin
    assert ghm_bin_index(torch.tensor([-100.0]), torch.tensor([1.0]), 4).item() == 3


def test_ghm_momentum_updates_the_histogram_buffer():
    crit = GHMCriterion(bins=4, momentum=0.75)
    x, t, valid = ghm_example()
    first = crit.update_counts(ghm_bin_index(x, t, 4), valid)
    torch.testing.assert_close(first, torch.tensor([3.0, 0, 1, 1]))  # starts at the batch counts
    # second batch: histogram (1, 2, 0, 1)
    g2 = torch.tensor([0.1, 0.3, 0.4, 0.8])
    x2 = torch.log(g2 / (1 - g2))
    idx2, valid2 = ghm_bin_index(x2, torch.zeros(4), 4), torch.ones(4, dtype=torch.bool)
    counts = crit.update_counts(idx2, valid2)
    # bin 0: .75 * 3 + .25 * 1; bin 1: first seen -> 2; bin 2: empty now -> kept; bin 3: .75 + .25
    expected = torch.tensor([2.5, 2.0, 1.0, 1.0])
    torch.testing.assert_close(counts, expected)
    torch.testing.assert_close(crit.state_dict()["bin_counts"], expected)  # saved with the model
    # weights: N = 4, n = 3 bins non-empty in this batch, S from the moving average
    w = ghm_c_weights(idx2, valid2, 4, counts)
    torch.testing.assert_close(w, torch.tensor([4 / 7.5, 4 / 6, 4 / 6, 4 / 3]))
    crit.eval()  # validation does not move the histogram
    crit.update_counts(idx2, valid2)
    torch.testing.assert_close(crit.bin_counts, expected)


# ---------------------------------------------------------------- class weights


def test_class_frequency_weights_formulas():
    counts = [10, 30, 0, 60]  # shares 0.1, 0.3, 0, 0.6
    inv = [1 / 10, 1 / 30, 1 / 1, 1 / 60]  # a class without boxes counts as 1
    mean = sum(inv) / 4
    assert class_frequency_weights(counts, "inverse") == pytest.approx([v / mean for v in inv])
    log = [1 / math.log(1.1 + f) for f in (0.1, 0.3, 0.0, 0.6)]
    assert class_frequency_weights(counts, "log") == pytest.approx(log)
    with pytest.raises(ValueError, match="loss.class_weights"):
        class_frequency_weights(counts, "sqrt")


def test_class_weights_scale_the_alpha_of_positives_in_sigmoid_focal():
    torch.manual_seed(3)
    x = torch.randn(40, 3) * 2
    labels = torch.randint(-2, 3, (40,))
    w = torch.tensor([0.5, 2.0, 3.0])
    ours = focal_loss_from_labels(x, labels, 0.25, 2.0, class_weights=w)
    valid = labels != -2
    onehot = F.one_hot(labels.clamp(min=0), 3).float() * (labels >= 0)[:, None]
    entry_w = torch.where(onehot > 0, 0.25 * w, 0.75)  # per-class alpha, negatives 1 - alpha
    ref = (tv_focal(x, onehot, alpha=-1, gamma=2.0) * entry_w)[valid].sum()
    torch.testing.assert_close(ours, ref)


def test_class_weights_from_the_training_annotations_reach_the_checkpointed_criterion(tiny_cfg):
    cfg = tiny_cfg("experiment=neon_retinanet", "loss=softmax_focal", "loss.class_weights=log",
                   "model.detector.backbone.weights=null")
    datamodule, module = build(cfg)
    (n,) = datamodule.class_counts()  # one class: share 1
    assert n == len(datamodule.train_dataset._labels) > 500
    torch.testing.assert_close(module.criterion.class_weights, torch.tensor([1 / math.log(2.1)]))
    assert "criterion.class_weights" in module.state_dict()
    run = json.loads(module.hparams.run_config)
    assert run["loss"]["class_weights"] == pytest.approx([1 / math.log(2.1)])


# ---------------------------------------------------------------- softmax head


def test_softmax_head_starts_at_background_probability_1_minus_pi():
    k, a, pi = 3, 2, 0.01
    head = RetinaHead(k, num_anchors=a, in_channels=32, channels=32, num_convs=1,
                      prior_prob=pi, background_class=True)
    cls, _ = head([torch.zeros(1, 32, 4, 4)])  # zero features: the logits are the biases
    assert cls[0].shape == (1, a * (k + 1), 4, 4)
    p = cls[0].view(1, a, k + 1, 4, 4).softmax(dim=2)
    torch.testing.assert_close(p[:, :, 0], torch.full((1, a, 4, 4), 1 - pi))
    torch.testing.assert_close(p[:, :, 1:], torch.full((1, a, k, 4, 4), pi / k))
    # and from random features it stays close
    cls, _ = head([torch.randn(2, 32, 8, 8)])
    bg = cls[0].view(2, a, k + 1, 8, 8).softmax(dim=2)[:, :, 0]
    assert (bg.mean() - (1 - pi)).abs() < 1e-3


def test_foreground_logits_give_the_softmax_probabilities_through_a_sigmoid():
    torch.manual_seed(4)
    k, a = 2, 3
    maps = [torch.randn(2, a * (k + 1), 4, 4) * 5, torch.randn(2, a * (k + 1), 2, 2) * 5]
    out = foreground_logits(maps, k)
    for m, o in zip(maps, out):
        p = m.view(2, a, k + 1, *m.shape[-2:]).softmax(dim=2)[:, :, 1:]  # (B, A, K, H, W)
        torch.testing.assert_close(o.sigmoid(), p.reshape(o.shape), atol=1e-6, rtol=1e-4)


# ---------------------------------------------------------------- criteria end to end

CRITERIA = {
    "focal": lambda: RetinaNetCriterion(class_weights=[2.0, 0.5]),
    "softmax_focal": lambda: SoftmaxFocalCriterion(class_weights=[2.0, 0.5]),
    "ohem": lambda: OHEMCriterion(min_neg=4),
    "ghm": lambda: GHMCriterion(bins=10, momentum=0.75),
}


def small_batch(name, dtype=torch.float32, scale=1.0):
    torch.manual_seed(5)
    n, k = 30, 2
    anchors = torch.rand(n, 2) * 80
    anchors = torch.cat([anchors, anchors + 20], dim=1)
    channels = k + 1 if CRITERIA[name]().background_class else k
    cls = (torch.randn(2, n, channels) * scale).to(dtype).requires_grad_()
    box = (torch.randn(2, n, 4) * scale).to(dtype).requires_grad_()
    gt = torch.stack([anchors[:2] + 1, torch.zeros(2, 4)])  # image 1: padding, no boxes
    labels = torch.tensor([[0, 1], [-1, -1]])
    return cls, box, anchors, gt, labels


@pytest.mark.parametrize("name", list(CRITERIA))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_criteria_finite_with_an_empty_image_and_under_low_precision(name, dtype):
    cls, box, anchors, gt, labels = small_batch(name, dtype, scale=100.0 if dtype != torch.float32 else 1.0)
    with torch.autocast("cpu", dtype=torch.bfloat16 if dtype == torch.float32 else dtype):
        out = CRITERIA[name]()(cls, box, anchors, gt, labels)
    (out["loss_cls"] + out["loss_box"]).backward()
    assert out["num_fg"] >= 2 and torch.isfinite(out["loss_cls"]) and out["loss_cls"] > 0
    assert torch.isfinite(cls.grad.float()).all() and torch.isfinite(box.grad.float()).all()
    # no boxes in the batch at all: finite, the box loss 0
    empty = CRITERIA[name]()(cls.detach().float(), box.detach().float(), anchors,
                             torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.long))
    assert empty["num_fg"] == 0 and empty["loss_box"] == 0 and torch.isfinite(empty["loss_cls"])


@pytest.mark.parametrize("name", list(CRITERIA))
def test_each_loss_decreases_when_overfitting_one_batch(name):
    cls, box, anchors, gt, labels = small_batch(name)
    crit = CRITERIA[name]()
    params = [cls, box]
    opt = torch.optim.Adam(params, lr=0.05)
    first = None
    for _ in range(30):
        out = crit(cls, box, anchors, gt, labels)
        loss = out["loss_cls"] + out["loss_box"]
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


# ---------------------------------------------------------------- real config


def one_empty_image_train_split(tmp_path):
    """Two NEON training tiles, the second with its boxes removed (one batch of 2)."""
    coco = json.loads((ROOT / "data/neon_trees/annotations/train.json").read_text())
    first, second = sorted(im["id"] for im in coco["images"])[:2]
    coco["images"] = [im for im in coco["images"] if im["id"] in (first, second)]
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] == first]
    path = tmp_path / "train_one_empty.json"
    path.write_text(json.dumps(coco))
    return path


@pytest.mark.parametrize("loss", ["focal", "softmax_focal", "ohem", "ghm"])
def test_each_loss_trains_a_fast_dev_run_with_an_image_without_boxes(tiny_cfg, tmp_path, loss):
    ann = one_empty_image_train_split(tmp_path)
    extra = ["loss.class_weights=inverse"] if "focal" in loss else []
    cfg = tiny_cfg("experiment=neon_retinanet", f"loss={loss}", "debug=fdr", *extra,
                   f"data.train_ann={ann}", "model.detector.backbone.weights=null")
    metrics = train(cfg)
    assert "val/mAP" in metrics and math.isfinite(metrics["val/mAP"])


def test_softmax_checkpoint_is_evaluated_but_not_exported(tiny_cfg, tmp_path):
    cfg = tiny_cfg("experiment=neon_retinanet", "loss=ohem", "trainer.max_epochs=1",
                   "trainer.limit_train_batches=1", "trainer.limit_val_batches=1",
                   "callbacks.lr_monitor=null", "model.detector.backbone.weights=null")
    train(cfg)
    path = tmp_path / "run" / "checkpoints" / "last.ckpt"
    ckpt = load_checkpoint(path)
    assert ckpt["state_dict"]["detector.head.cls_pred.bias"].numel() == 3 * 2  # A (K + 1)
    with pytest.raises(ValueError, match="softmax loss"):
        meta_from_checkpoint(ckpt, path)
    metrics = evaluate(tiny_cfg(f"ckpt_path={path}", "accelerator=cpu", name="eval"))
    assert math.isfinite(metrics["val/mAP"])


def test_the_softmax_loss_gives_the_head_its_background_channel(tiny_cfg):
    cfg = tiny_cfg("experiment=neon_retinanet", "loss=softmax_focal",
                   "model.detector.backbone.weights=null")
    _, module = build(cfg)
    head = module.detector.head
    assert head.background_class and head.cls_channels == module.num_classes + 1
    assert not build(tiny_cfg("experiment=neon_retinanet"))[1].detector.head.background_class
    # a module put together by hand with a sigmoid head: a clear error
    with open_dict(cfg):
        cfg.model.detector.head.num_classes = 1
        cfg.model.detector.head.background_class = False
    with pytest.raises(Exception, match="SoftmaxFocalCriterion needs a head with a background channel"):
        instantiate(cfg.model)
