"""retina.analysis.confusion: classes + background on a hand-built image."""

import csv

import numpy as np

from retina.analysis.confusion import confusion_matrix, labels, normalised, write_csv
from tests.helpers import A, B, det, one_image_coco


def test_confusion_matrix_counts_by_hand(tmp_path):
    gt = one_image_coco([(A, [0, 0, 20, 20]), (B, [50, 0, 20, 20]), (B, [0, 50, 20, 20]),
                         (A, [100, 100, 50, 50])], iscrowd=(4,))
    dets = [
        det(A, [0, 0, 20, 20], 0.9),      # on the a box: (a, a)
        det(A, [50, 0, 20, 20], 0.8),     # on a b box: (b, a)
        det(B, [1, 0, 20, 20], 0.7),      # on the a box, already taken: (background, b)
        det(B, [110, 110, 10, 10], 0.6),  # inside the crowd box: not counted
        det(B, [180, 180, 10, 10], 0.5),  # on nothing: (background, b)
        det(A, [0, 50, 20, 20], 0.2),     # below the score threshold: the b box stays missed
    ]
    matrix = confusion_matrix(gt, dets, [1], iou_thresh=0.5, score_thresh=0.3)
    # rows true a, b, background; columns predicted a, b, background
    np.testing.assert_array_equal(matrix, [[1, 0, 0], [1, 0, 1], [0, 2, 0]])
    np.testing.assert_allclose(normalised(matrix), [[1, 0, 0], [0.5, 0, 0.5], [0, 1, 0]])
    # a lower threshold takes the last detection: the b box is confused, not missed
    np.testing.assert_array_equal(confusion_matrix(gt, dets, [1], 0.5, 0.1),
                                  [[1, 0, 0], [2, 0, 0], [0, 2, 0]])
    names = labels(gt)
    assert names == ["a", "b", "background"]
    rows = list(csv.reader(open(write_csv(matrix, names, tmp_path / "m.csv"))))
    assert rows == [["true \\ predicted", "a", "b", "background"], ["a", "1", "0", "0"],
                    ["b", "1", "0", "1"], ["background", "0", "2", "0"]]
