import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss as tv_focal

from retina.losses.functional import box_regression_loss, focal_loss_from_labels, sigmoid_focal_loss


@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (0.5, 1.0), (-1.0, 2.0), (0.25, 0.0), (0.75, 0.5), (-1, 5.0)])
def test_focal_matches_torchvision_values_and_grads(alpha, gamma):
    torch.manual_seed(0)
    x = (torch.randn(64, 7) * 4).requires_grad_()
    t = (torch.rand(64, 7) > 0.7).float()
    ours = sigmoid_focal_loss(x, t, alpha, gamma)
    (g_ours,) = torch.autograd.grad(ours.sum(), x)
    ref = tv_focal(x, t, alpha, gamma)
    (g_ref,) = torch.autograd.grad(ref.sum(), x)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(g_ours, g_ref, atol=1e-6, rtol=1e-5)


def test_focal_soft_targets_and_reductions_match_torchvision():
    torch.manual_seed(1)
    x, t = torch.randn(10, 3) * 3, torch.rand(10, 3)
    for red in ("none", "mean", "sum"):
        torch.testing.assert_close(sigmoid_focal_loss(x, t, 0.3, 1.5, red), tv_focal(x, t, 0.3, 1.5, red))
    with pytest.raises(ValueError, match="reduction"):
        sigmoid_focal_loss(x, t, reduction="avg")


def test_focal_hand_computed():
    # x = 0 -> p = 0.5; t = 1: CE = log 2, (1 - p_t)^2 = 0.25, alpha_t = 0.25
    loss = sigmoid_focal_loss(torch.zeros(1), torch.ones(1), 0.25, 2.0)
    assert loss.item() == pytest.approx(0.25 * 0.25 * 0.6931471805599453)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_focal_finite_for_extreme_low_precision_logits(dtype, gamma):
    x = torch.tensor([-100.0, -30.0, 0.0, 30.0, 100.0]).repeat(2).to(dtype).requires_grad_()
    t = torch.tensor([0.0] * 5 + [1.0] * 5)
    loss = sigmoid_focal_loss(x, t, 0.25, gamma)
    (g,) = torch.autograd.grad(loss.sum(), x)
    assert loss.dtype == torch.float32 and torch.isfinite(loss).all() and torch.isfinite(g).all()
    # confidently right entries cost ~0, confidently wrong ones ~|x|
    assert loss[0] < 1e-6 and loss[9] < 1e-6 and loss[4] > 10


@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (-1.0, 0.0), (0.5, 0.5)])
def test_sparse_focal_equals_dense_on_valid_anchors(alpha, gamma):
    torch.manual_seed(2)
    n, k = 200, 5
    x = (torch.randn(n, k) * 3).requires_grad_()
    labels = torch.randint(-2, k, (n,))  # -2 ignored, -1 background, else class
    ours = focal_loss_from_labels(x, labels, alpha, gamma)
    (g_ours,) = torch.autograd.grad(ours, x)
    valid = labels != -2
    onehot = F.one_hot(labels.clamp(min=0), k).float() * (labels >= 0)[:, None]
    ref = tv_focal(x[valid], onehot[valid], alpha, gamma).sum()
    (g_ref,) = torch.autograd.grad(ref, x)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-5, atol=1e-6)
    assert (g_ours[labels == -2] == 0).all()


def test_sparse_focal_under_bf16_autocast_is_finite():
    x = (torch.randn(50, 4) * 100).bfloat16().requires_grad_()
    labels = torch.randint(-2, 4, (50,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = focal_loss_from_labels(x, labels)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad.float()).all() and x.grad.dtype == torch.bfloat16


def test_box_losses_hand_computed():
    pred = torch.tensor([[0.0, 0.0, 0.0, 0.0]])
    tgt = torch.tensor([[0.05, -1.0, 0.0, 0.2]])
    # smooth-L1 beta 0.1: 0.5 * 0.05^2 / 0.1 + (1 - 0.05) + 0 + (0.2 - 0.05)
    assert box_regression_loss("smooth_l1", pred, tgt, 0.1).item() == pytest.approx(0.0125 + 0.95 + 0.15)
    assert box_regression_loss("l1", pred, tgt).item() == pytest.approx(1.25)
    # GIoU of [0,0,2,2] vs [1,1,3,3]: IoU 1/7, hull 9, union 7 -> 1 - (1/7 - 2/9)
    a, b = torch.tensor([[0.0, 0, 2, 2]]), torch.tensor([[1.0, 1, 3, 3]])
    assert box_regression_loss("giou", a, b).item() == pytest.approx(1 - (1 / 7 - 2 / 9), abs=1e-6)
    with pytest.raises(ValueError, match="box loss"):
        box_regression_loss("l2", a, b)
