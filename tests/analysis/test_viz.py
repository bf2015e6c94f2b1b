"""Figures of retina.analysis.viz on tiny inputs: the boxes land where the pixels say."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from retina.analysis.viz import (  # noqa: E402
    box_with_distributions,
    compare_figure,
    crop_around,
    draw_boxes,
    plot_curves,
    plot_side_distributions,
    review_grid,
    show_boxes,
    to_hwc,
)


def test_to_hwc_keeps_uint8_and_scales_floats():
    image = torch.arange(12, dtype=torch.uint8).reshape(3, 2, 2)
    out = to_hwc(image)
    assert out.shape == (2, 2, 3) and out.dtype == np.uint8
    assert out[0, 1].tolist() == [1, 5, 9]  # pixel (y=0, x=1) of each channel
    # float 0.5 -> 127.5 -> 128 after rounding; values past 1 are clipped
    assert to_hwc(torch.tensor([0.5, 2.0, 0.0]).reshape(3, 1, 1))[0, 0].tolist() == [128, 255, 0]
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        to_hwc(torch.zeros(2, 2))


def test_draw_boxes_places_rectangles_at_the_box_corners():
    fig, ax = plt.subplots()
    patches = draw_boxes(ax, torch.tensor([[1.0, 2.0, 11.0, 7.0], [0, 0, 3, 3]]), texts=["a", "b"])
    assert [(p.get_x(), p.get_y(), p.get_width(), p.get_height()) for p in patches] == [
        (1.0, 2.0, 10.0, 5.0), (0.0, 0.0, 3.0, 3.0)  # width 11 - 1, height 7 - 2
    ]
    assert [t.get_text() for t in ax.texts] == ["a", "b"]
    assert ax.texts[0].get_position() == (1.0, 2.0)
    with pytest.raises(ValueError, match="1 texts for 2 boxes"):
        draw_boxes(ax, torch.zeros(2, 4), texts=["x"])
    plt.close(fig)


def test_compare_figure_draws_ground_truth_and_only_confident_predictions():
    image = torch.zeros(3, 20, 30, dtype=torch.uint8)
    gt = torch.tensor([[1.0, 1, 5, 5], [10, 10, 20, 15]])
    det = {"boxes": torch.tensor([[1.0, 1, 5, 6], [2, 2, 4, 4]]), "scores": torch.tensor([0.9, 0.1])}
    fig = compare_figure([image, image], [gt, gt[:0]], [det, det], score_thresh=0.3)
    axes = np.array(fig.axes).reshape(2, 2)
    assert [len(ax.patches) for ax in axes.ravel()] == [2, 0, 1, 1]  # gt row, prediction row
    assert axes[1, 0].patches[0].get_height() == 5.0  # the 0.9 box: y 1..6
    assert [t.get_text() for t in axes[1, 0].texts] == ["0.90"]
    assert axes[0, 0].get_title() == "ground truth: 2"
    plt.close(fig)
    with pytest.raises(ValueError, match="2 images, 1 ground truths"):
        compare_figure([image, image], [gt], [det, det])


def test_show_boxes_shows_the_image():
    fig, ax = plt.subplots()
    show_boxes(ax, torch.full((3, 4, 6), 255, dtype=torch.uint8), torch.zeros(0, 4), title="t")
    assert ax.images[0].get_array().shape == (4, 6, 3) and ax.get_title() == "t"
    plt.close(fig)


def test_plot_curves_one_line_per_entry():
    x = torch.linspace(0, 1, 5)
    ax = plot_curves(x, {"a": x, "b": 2 * x}, "x", "y", ylim=(0, 3))
    assert [line.get_label() for line in ax.lines] == ["a", "b"]
    assert ax.lines[1].get_ydata().tolist() == pytest.approx([0, 0.5, 1, 1.5, 2])
    assert ax.get_ylim() == (0, 3)
    plt.close(ax.figure)


def test_side_distributions_bars_in_pixels_and_mean_line():
    probs = torch.zeros(4, 3)
    probs[:, 1] = 1.0  # every side at bin 1
    probs[3] = torch.tensor([0.5, 0.0, 0.5])  # bottom: mean bin 1, spread out
    axes = plot_side_distributions(probs, px_per_bin=8.0)
    assert [ax.get_title() for ax in axes] == ["left: 8 px", "top: 8 px", "right: 8 px",
                                               "bottom: 8 px"]
    bars = axes[3].patches
    assert [b.get_height() for b in bars] == [0.5, 0.0, 0.5]
    assert [b.get_x() + b.get_width() / 2 for b in bars] == pytest.approx([0, 8, 16])
    plt.close(axes[0].figure)
    with pytest.raises(ValueError, match=r"\(4, R\+1\)"):
        plot_side_distributions(torch.zeros(3, 5), 8.0)
    # per-side pixels: left/right 10 px per bin, top/bottom 5
    axes = plot_side_distributions(probs, torch.tensor([10.0, 5, 10, 5]))
    assert [ax.get_title() for ax in axes] == ["left: 10 px", "top: 5 px", "right: 10 px",
                                               "bottom: 5 px"]
    plt.close(axes[0].figure)


def test_crop_around_keeps_the_box_on_the_same_pixels():
    image = torch.arange(3 * 50 * 60, dtype=torch.float32).reshape(3, 50, 60)
    box = torch.tensor([20.0, 10, 30, 30])  # 10 wide, 20 high; margin 0.5: 5 and 10 px
    crop, local = crop_around(image, box, margin=0.5)
    assert local.tolist() == [5.0, 10, 15, 30]  # crop from x 15, y 0 (clipped at the top)
    assert tuple(crop.shape) == (3, 41, 21)  # y 0..40, x 15..35
    assert torch.equal(crop[:, 10, 5], image[:, 10, 20])  # the box corner, same pixel


def test_box_with_distributions_and_review_grid_panels():
    image = torch.zeros(3, 40, 40, dtype=torch.uint8)
    box, gt = torch.tensor([10.0, 10, 20, 20]), torch.tensor([[11.0, 9, 21, 20]])
    fig = box_with_distributions(image, box, torch.full((4, 5), 0.2), 4.0, "t", gt)
    crop_ax = fig.axes[0]
    assert len(fig.axes) == 5 and crop_ax.get_title() == "t"
    gt_rect, det_rect = crop_ax.patches
    # the ground truth keeps its offset from the box inside the crop: +1 in x, -1 in y
    assert (gt_rect.get_x() - det_rect.get_x(), gt_rect.get_y() - det_rect.get_y()) == (1.0, -1.0)
    plt.close(fig)
    fig = review_grid([image] * 4, [gt] * 4, [box] * 4, ["a", "b", "c", "d"], columns=3)
    assert [ax.get_title() for ax in fig.axes[:4]] == ["a", "b", "c", "d"]
    assert [len(ax.patches) for ax in fig.axes] == [2, 2, 2, 2, 0, 0]  # gt + box; 2 empty panels
    assert fig.axes[0].patches[1].get_edgecolor()[:3] == (1.0, 0.0, 0.0)  # the detection in red
    plt.close(fig)
