"""retina.analysis.uncertainty: ranking detections by the relative spread of their sides."""

import math

import pytest
import torch

from retina.analysis.uncertainty import average_ranks, most_ambiguous, relative_spread, spearman


def test_most_ambiguous_ranks_by_relative_spread():
    dets = [
        {  # image 10: (1+1+1+1) / 4 / 10 = 0.1 and 5 / 100 = 0.05; a 0.1-score one with 0.5
            "boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 100.0, 100.0],
                                   [0.0, 0.0, 10.0, 10.0]]),
            "spread": torch.tensor([[1.0] * 4, [5.0] * 4, [5.0] * 4]),
            "scores": torch.tensor([0.9, 0.8, 0.1]),
            "labels": torch.tensor([0, 1, 0]),
        },
        {  # image 20: w 20, h 10: (4/20 + 2/10 + 4/20 + 2/10) / 4 = 0.2
            "boxes": torch.tensor([[0.0, 0.0, 20.0, 10.0]]),
            "spread": torch.tensor([[4.0, 2.0, 4.0, 2.0]]),
            "scores": torch.tensor([0.5]),
            "labels": torch.tensor([2]),
        },
        {"boxes": torch.zeros(0, 4), "spread": torch.zeros(0, 4), "scores": torch.zeros(0),
         "labels": torch.zeros(0, dtype=torch.long)},
    ]
    rel = relative_spread(dets[1]["boxes"], dets[1]["spread"])
    torch.testing.assert_close(rel, torch.tensor([0.2]))
    top = most_ambiguous([10, 20, 30], dets, k=5, min_score=0.3)
    assert [(d.image_id, d.label) for d in top] == [(20, 2), (10, 0), (10, 1)]
    assert [d.uncertainty for d in top] == pytest.approx([0.2, 0.1, 0.05])
    assert top[0].score == 0.5 and top[0].spread.tolist() == [4.0, 2.0, 4.0, 2.0]
    assert len(most_ambiguous([10, 20, 30], dets, k=1)) == 1
    with pytest.raises(ValueError, match="spread"):
        most_ambiguous([1], [{k: v for k, v in dets[1].items() if k != "spread"}])


def test_most_ambiguous_ranks_all_passing_boxes_and_skips_low_scores():
    dets = [
        # box 10 wide: relative spread (1/10 + 1/10 + 1/10 + 1/10) / 4 = 0.1
        {"boxes": torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10]]), "scores": torch.tensor([0.9, 0.1]),
         "labels": torch.tensor([0, 0]), "spread": torch.tensor([[1.0, 1, 1, 1], [0, 0, 0, 0]])},
        # 20 x 10 box, spread 2 everywhere: (2/20 + 2/10 + 2/20 + 2/10) / 4 = 0.15
        {"boxes": torch.tensor([[0.0, 0, 20, 10]]), "scores": torch.tensor([0.5]),
         "labels": torch.tensor([0]), "spread": torch.tensor([[2.0, 2, 2, 2]])},
    ]
    ranked = most_ambiguous([7, 8], dets, k=None, min_score=0.3)[::-1]
    assert [(a.image_id, a.index) for a in ranked] == [(7, 0), (8, 0)]  # 0.1-score box left out
    assert [a.uncertainty for a in ranked] == pytest.approx([0.1, 0.15])


def test_average_ranks_share_ties():
    # 20 20 are ranks 2 and 3: both 2.5
    ranks = average_ranks(torch.tensor([10.0, 20.0, 20.0, 40.0, 5.0]))
    assert ranks.tolist() == [2.0, 3.5, 3.5, 5.0, 1.0]


def test_spearman_against_hand_computations():
    # no ties: rank differences d = (-1, 1, -1, 1, 0), 1 - 6 sum d^2 / (n (n^2 - 1)) = 1 - 24/120
    x, y = torch.tensor([1.0, 2, 3, 4, 5]), torch.tensor([2.0, 1, 4, 3, 5])
    assert spearman(x, y) == pytest.approx(0.8, abs=1e-12)
    # ties: ranks x (1, 2.5, 2.5, 4), y (1, 3, 2, 4); centred (-1.5, 0, 0, 1.5), (-1.5, .5, -.5, 1.5)
    # sum of products 4.5, sums of squares 4.5 and 5: 4.5 / sqrt(22.5) = 3 / sqrt(10)
    x, y = torch.tensor([10.0, 20, 20, 40]), torch.tensor([1.0, 3, 2, 4])
    assert spearman(x, y) == pytest.approx(3 / math.sqrt(10), abs=1e-12)
    assert spearman(x, -y) == pytest.approx(-3 / math.sqrt(10), abs=1e-12)
    # a monotone transform changes nothing
    assert spearman(x.exp(), y**3) == pytest.approx(3 / math.sqrt(10), abs=1e-12)
    assert math.isnan(spearman(torch.tensor([1.0]), torch.tensor([2.0])))
    assert math.isnan(spearman(torch.tensor([1.0, 1.0]), torch.tensor([2.0, 3.0])))
