"""retina.model.head: the RetinaNet head, with a background channel for softmax losses."""

import torch

from retina.model.head import RetinaHead


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


def test_subnet_convs_without_bias():
    head = RetinaHead(3, group_norm=True, conv_bias=False)
    convs = [m for m in head.cls_subnet.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 4 and all(c.bias is None for c in convs)
    # with a zero bias the same weights compute the same outputs
    with_bias = RetinaHead(3, group_norm=True)
    missing, unexpected = with_bias.load_state_dict(head.state_dict(), strict=False)
    assert sorted(missing) == sorted(f"{s}.{i}.bias" for s in ("cls_subnet", "box_subnet")
                                     for i in (0, 3, 6, 9)) and not unexpected
    feats = [torch.randn(2, 256, 8, 8)]
    for a, b in zip(head(feats), with_bias(feats)):
        torch.testing.assert_close(a, b)
