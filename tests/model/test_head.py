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
