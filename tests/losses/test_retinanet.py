"""retina.losses.retinanet: the RetinaNet criteria (focal, softmax focal, OHEM, GHM-C)."""

import pytest
import torch
import torch.nn.functional as F

from retina.losses.functional import ghm_bin_index, ghm_c_weights
from retina.losses.retinanet import (
    GHMCriterion,
    OHEMCriterion,
    RetinaNetCriterion,
    SoftmaxFocalCriterion,
)
from tests.helpers import ghm_example


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


# ---------------------------------------------------------------- every criterion


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
