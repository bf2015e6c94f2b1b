"""retina.convert.torchvision: every tensor of torchvision's RetinaNet v1 / v2 maps onto the
experiment's Detector and back; old head names, wrong variants and stray keys (the
detections themselves are compared in tests/e2e/test_convert.py)."""

import pytest
import torch
from torchvision.models.detection import retinanet_resnet50_fpn, retinanet_resnet50_fpn_v2

from retina.convert.__main__ import run
from retina.convert.keys import ConversionError, convert_state, invert
from retina.convert.torchvision import (
    VARIANTS,
    behaviour_differences,
    class_names,
    detect_variant,
    prefixes,
    upgrade_head_layout,
)
from retina.convert.write import build_module

BUILDERS = {"v1": retinanet_resnet50_fpn, "v2": retinanet_resnet50_fpn_v2}


def torchvision_state(variant: str, num_classes: int = 5) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = BUILDERS[variant](weights=None, weights_backbone=None, num_classes=num_classes)
    return model.state_dict()


def experiment_module(variant: str, tmp_path, num_classes: int = 5):
    names, ids = class_names(num_classes)
    return build_module(VARIANTS[variant][0], [], names, ids, tmp_path)


@pytest.mark.parametrize("variant", ["v1", "v2"])
def test_every_tensor_maps_there_and_back(variant, tmp_path):
    theirs = torchvision_state(variant)
    assert detect_variant(theirs) == variant
    det = experiment_module(variant, tmp_path).detector
    table = prefixes(det)
    ours = convert_state(theirs, table, det.state_dict(), variant)
    det.load_state_dict(ours)  # strict: every Detector tensor given
    target = {k: v for k, v in theirs.items() if not k.endswith("num_batches_tracked")}
    back = convert_state(det.state_dict(), invert(table), target, variant)
    assert sorted(back) == sorted(target)
    assert all(torch.equal(back[k], v) for k, v in target.items())
    # v2's head convs have no bias, like torchvision's before GroupNorm
    assert ("head.cls_subnet.0.bias" in ours) == (variant == "v1")


def test_head_names_before_torchvision_0_13_are_read():
    state = torchvision_state("v1")
    old = {}
    for k, v in state.items():  # conv.{i}.0.weight was conv.{2i}.weight (conv, ReLU, ...)
        parts = k.split(".")
        if parts[0] == "head" and parts[2] == "conv":
            k = ".".join(parts[:3] + [str(2 * int(parts[3]))] + parts[5:])
        old[k] = v
    assert "head.classification_head.conv.6.weight" in old
    assert upgrade_head_layout(old).keys() == state.keys()


def test_a_file_of_the_other_variant_or_with_stray_keys_is_an_error(tmp_path):
    v1 = torchvision_state("v1")
    det = experiment_module("v2", tmp_path).detector
    with pytest.raises(ConversionError, match=r"tensors the file lacks \(16\).*head.cls_subnet.1."
                                              r"weight.*other shapes.*fpn.extra_blocks.p6.weight"):
        convert_state(v1, prefixes(det), det.state_dict(), "v1 as v2")
    stray = {**torchvision_state("v2"), "head.extra.weight": torch.zeros(1)}
    with pytest.raises(ConversionError, match=r"keys no rule maps \(1\): \['head.extra.weight'\]"):
        convert_state(stray, prefixes(det), det.state_dict(), "stray")
    hybrid = {**v1, "head.classification_head.conv.0.1.weight": torch.zeros(256)}
    with pytest.raises(ConversionError, match="neither torchvision RetinaNet v1 nor v2"):
        detect_variant(hybrid)
    with pytest.raises(ConversionError, match="not a torchvision RetinaNet"):
        detect_variant({"fc.weight": torch.zeros(1)})


def test_classes_are_torchvisions_coco_labels():
    names, ids = class_names(91)
    assert names[:2] == ["__background__", "person"] and names[12] == "N/A" and ids == list(range(91))
    assert class_names(3) == (["0", "1", "2"], [0, 1, 2])


def test_the_experiments_compute_as_torchvision_but_v1s_batch_norm_epsilon(tmp_path):
    v1 = experiment_module("v1", tmp_path)
    assert [n.split(" is")[0] for n in behaviour_differences(v1)] == [
        "backbone: bn_eps (set it with overwrite_eps(model, eps))"]
    assert behaviour_differences(experiment_module("v2", tmp_path)) == []


def test_command_line_errors_name_the_options(capsys):
    for argv, message in [
        (["torchvision"], "expected torchvision|mmdet|to-torchvision FILE first"),
        (["torchvision", "x.pth", "out=d", "vairant=v1"],
         "unknown option 'vairant' (did you mean variant?); options: out, variant, bn_eps"),
        (["mmdet", "x.pth"], "missing out=... (mmdet takes out= and optionally model="),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            run(argv)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and message in err and len(err.splitlines()) == 1
