"""``retina report`` with every ``report.*`` key on the hand-built image of tests/helpers.py
(TIDE's error types, one of each): the files it writes parsed and compared with counts worked
out by hand, the figures read back (bar values, image array)."""

import csv
import json

import numpy as np
import pytest

from retina.eval.report import main as report_main
from tests.figures import saved_figures
from tests.helpers import DETS, GT

# detections scoring >= 0.3, highest first: d2 (b on g2 of class a, IoU 1), d5 (a, on nothing),
# d3 (b inside g3, IoU 0.3), d6 (a, IoU 0.3 with g5 of class b), d1 (a on g1, IoU 1).
# Rows true a, b, background; columns predicted a, b, background.
CONFUSION = {
    # IoU 0.5: d2 -> (a, b), d5 d3 d6 -> background row, d1 -> (a, a); boxes left: g6 (a),
    # g3 g4 g5 g7 (b) -> background column
    0.5: [[1, 1, 1], [0, 0, 4], [2, 1, 0]],
    # IoU 0.25: d3 now takes g3 -> (b, b), d6 takes g5 -> (b, a); g4 g7 left
    0.25: [[1, 1, 1], [1, 1, 2], [1, 0, 0]],
}
# TIDE counts in the report's order (classification, localisation, both, duplicate,
# background, missed):
ERRORS = {
    # background_iou 0.1: d2 classification, d3 localisation (IoU 0.3, its class), d6 both
    # (IoU 0.3, another class), d4 duplicate of d1, d5 background; g4 and g5 missed (g3 is
    # d3's to fix)
    0.1: {"classification": 1, "localisation": 1, "both": 1, "duplicate": 1, "background": 1,
          "missed": 2},
    # background_iou 0.35: IoU 0.3 is background now: d3, d6 and d5; g3 joins the missed
    0.35: {"classification": 1, "localisation": 0, "both": 0, "duplicate": 1, "background": 3,
           "missed": 3},
}


@pytest.fixture
def files(tmp_path):
    # every detection carries a spread (GFL's): 1 px per side, d6 0.5 px. Relative spread
    # (s/w + s/h) / 2: d3 (20 x 6) 0.1083, d5 (10 x 10) 0.1, d6 0.0542, d1 d2 (20 x 20) 0.05
    dets = [dict(d, spread=[0.5] * 4 if d["bbox"] == [100, 100, 20, 6] else [1.0] * 4)
            for d in DETS]
    (tmp_path / "ann.json").write_text(json.dumps(GT.dataset))
    (tmp_path / "results.json").write_text(json.dumps(dets))
    return tmp_path


def run_report(files, out, *options):
    with saved_figures() as figures:
        code = report_main([f"ann={files / 'ann.json'}", f"results={files / 'results.json'}",
                            f"out={out}", *options])
    assert code in (None, 0)
    return figures


def table(md: str, header: str) -> list[list[str]]:
    """The rows of the markdown table whose header row starts with ``header``."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


@pytest.mark.parametrize("iou_thresh", [0.5, 0.25])
def test_report_iou_thresh_sets_the_confusion_matrix(files, tmp_path, iou_thresh):
    out = tmp_path / "report"
    figures = run_report(files, out, f"report.iou_thresh={iou_thresh}")
    rows = list(csv.reader(open(out / "confusion_matrix.csv")))
    assert rows[0] == ["true \\ predicted", "a", "b", "background"]
    counts = np.array([[int(v) for v in r[1:]] for r in rows[1:]])
    np.testing.assert_array_equal(counts, CONFUSION[iou_thresh])
    assert json.loads((out / "metrics.json").read_text())["confusion"]["iou_thresh"] == iou_thresh
    # the figure shows each row's shares (and its title the threshold)
    ax = figures["confusion_matrix.png"].axes[0]
    shares = counts / counts.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(np.asarray(ax.images[0].get_array()), shares)
    assert f"IoU {iou_thresh:g}" in ax.get_title()
    written = sorted((t.get_position(), t.get_text()) for t in ax.texts)
    assert written == sorted(((j, i), str(c)) for (i, j), c in np.ndenumerate(counts) if c)


@pytest.mark.parametrize("background_iou", [0.1, 0.35])
def test_report_background_iou_sets_the_error_types(files, tmp_path, background_iou):
    out = tmp_path / "report"
    figures = run_report(files, out, f"report.background_iou={background_iou}")
    md = (out / "errors.md").read_text()
    rows = table(md, "| error |")
    assert {r[0]: int(r[1]) for r in rows} == ERRORS[background_iou]
    assert f"background below IoU {background_iou:g}" in md
    # the bars: one per type, its length the mAP_50 gain in the table ("n/a" none here)
    gains = {r[0]: float(r[2]) for r in rows}
    ax = figures["errors.png"].axes[0]
    bars = {label.get_text(): bar.get_width()
            for label, bar in zip(ax.get_yticklabels(), ax.patches)}
    assert bars.keys() == gains.keys()
    for kind, gain in gains.items():
        assert bars[kind] == pytest.approx(gain, abs=5e-5), kind  # the table rounds to 4 digits
    if background_iou == 0.1:
        # hand-computed (tests/analysis/test_errors.py): mAP_50 (26.8 + 26/3) / 202; without the
        # missed boxes (26.8 + 17) / 202
        assert gains["missed"] == pytest.approx((26.8 + 17) / 202 - (26.8 + 26 / 3) / 202,
                                                abs=5e-5)


def test_report_worst_images_and_top_uncertain(files, tmp_path):
    out = tmp_path / "report"
    run_report(files, out, "report.worst_images=0", "report.top_uncertain=2")
    assert table((out / "worst_images.md").read_text(), "| image_id") == []
    rows = table((out / "uncertainty.md").read_text(), "| image_id")
    # the two widest among the five scoring >= 0.3: d3 (class b, 0.6), then d5 (class a, 0.7);
    # neither matches a box at IoU 0.5
    assert [(r[2], r[3], r[4], r[6]) for r in rows] == [("b", "0.600", "0.108", "false"),
                                                        ("a", "0.700", "0.100", "false")]
    # the defaults: the one image listed, all five detections >= 0.3 in the uncertainty list
    run_report(files, tmp_path / "default")
    worst = table((tmp_path / "default" / "worst_images.md").read_text(), "| image_id")
    assert len(worst) == 1
    # 7 boxes, 5 detections >= 0.3; missed: g2 to g7 (g6 and g7 are found only below 0.3, g2
    # only by d2 of the other class); false: d2 d3 d5 d6
    assert [int(v) for v in worst[0][2:6]] == [7, 5, 6, 4]
    assert len(table((tmp_path / "default" / "uncertainty.md").read_text(), "| image_id")) == 5
    # true positives at IoU 0.5 at any score: d1, d7, d8
    assert "over the 3 true positives" in (tmp_path / "default" / "uncertainty.md").read_text()
