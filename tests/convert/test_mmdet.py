"""retina.convert.mmdet: mmdetection's RetinaNet / GFL names (3.x layout) onto the
experiments' Detectors, GFL's scales and bins, BGR models, normalisation and classes (the
forward passes are compared in tests/e2e/test_convert.py)."""

import pytest
import torch
import torch.nn.functional as F

from retina.convert.keys import ConversionError, convert_state
from retina.convert.mmdet import (
    EXPERIMENTS,
    classes,
    detect_model,
    gfl_scales,
    normalisation,
    prefixes,
    to_rgb,
)
from retina.convert.write import build_module, coco80
from tests.convert.mmdet_reference import mmdet_state


def coco_like(k):
    return [str(i) for i in range(k)], list(range(1, k + 1))


@pytest.mark.parametrize("model", ["retinanet", "gfl"])
def test_every_tensor_maps_onto_the_experiment_model(model, tmp_path):
    state = mmdet_state(model, num_classes=4)
    assert detect_model(state) == model
    module = build_module(EXPERIMENTS[model], [], *coco_like(4), tmp_path)
    det = module.detector
    if model == "gfl":
        state = gfl_scales(state, det.head.reg_max)
    mapped = convert_state(state, prefixes(det, model), det.state_dict(), model)
    det.load_state_dict(mapped)
    assert torch.equal(det.fpn.extra_blocks.p6.weight, state["neck.fpn_convs.3.conv.weight"])
    assert torch.equal(det.head.cls_subnet[0].weight, state["bbox_head.cls_convs.0.conv.weight"])
    if model == "gfl":  # conv, GroupNorm, ReLU: the norm of tower conv 1 is module 4
        assert torch.equal(det.head.box_subnet[4].weight, state["bbox_head.reg_convs.1.gn.weight"])


def test_gfl_scales_are_stacked_by_level_and_the_bins_checked():
    state = mmdet_state("gfl", num_classes=2)
    out = gfl_scales(state, reg_max=16)
    expected = torch.stack([state[f"bbox_head.scales.{i}.scale"] for i in range(5)])
    assert torch.equal(out["head.scales"], expected) and out["head.scales"].shape == (5,)
    assert not any(k.startswith(("bbox_head.scales", "bbox_head.integral")) for k in out)
    with pytest.raises(ConversionError, match="not the bins 0..8"):
        gfl_scales(state, reg_max=8)
    del state["bbox_head.scales.2.scale"]
    with pytest.raises(ConversionError, match=r"levels \[0, 1, 3, 4\]"):
        gfl_scales(state, reg_max=16)


def test_a_bgr_model_reads_rgb_after_its_first_conv_is_flipped():
    state = {"backbone.conv1.weight": torch.randn(8, 3, 3, 3)}
    rgb = torch.rand(1, 3, 6, 6)
    bgr = rgb[:, [2, 1, 0]]
    torch.testing.assert_close(F.conv2d(rgb, to_rgb(state)["backbone.conv1.weight"]),
                               F.conv2d(bgr, state["backbone.conv1.weight"]))


def test_normalisation_in_unit_rgb():
    # pytorch style: [123.675, 116.28, 103.53] / 255 = ImageNet's [0.485, 0.456, 0.406]
    mean, std = normalisation([123.675, 116.28, 103.53], [58.395, 57.12, 57.375], True)
    values = [float(v) for v in mean.split("=")[1].strip("[]").split(",")]
    assert values == pytest.approx([0.485, 0.456, 0.406], abs=1e-12)
    assert std.startswith("model.detector.pixel_std=[0.229")
    # caffe style, BGR: mean [103.53, 116.28, 123.675] (B, G, R) -> RGB [123.675, ...] / 255
    mean, std = normalisation([103.53, 116.28, 123.675], [1.0, 1.0, 1.0], False)
    values = [float(v) for v in mean.split("=")[1].strip("[]").split(",")]
    assert values == pytest.approx([0.485, 0.456, 0.406], abs=1e-12)
    assert std == f"model.detector.pixel_std=[{1 / 255!r},{1 / 255!r},{1 / 255!r}]"


def test_classes_from_the_file_or_coco():
    names, ids = coco80()
    assert len(names) == 80 and names[0] == "person" and ids[:12] == [1, 2, 3, 4, 5, 6, 7, 8, 9,
                                                                       10, 11, 13]
    assert classes({}, 80) == (names, ids)
    assert classes({"meta": {"CLASSES": tuple(names)}}, 80) == (names, ids)
    assert classes({"meta": {"dataset_meta": {"classes": ("a", "b")}}}, 2) == (["a", "b"], [1, 2])
    assert classes({}, 3) == (["0", "1", "2"], [1, 2, 3])
    with pytest.raises(ConversionError, match="names 2 classes, its head predicts 3"):
        classes({"meta": {"CLASSES": ("a", "b")}}, 3)


def test_not_a_retinanet_or_gfl():
    with pytest.raises(ConversionError, match="not an mmdetection RetinaNet or GFL"):
        detect_model({"bbox_head.fcos_cls.weight": torch.zeros(1)})
