"""Converted detectors compute what the originals compute: torchvision RetinaNet v1 / v2
(detections on NEON tiles and random images, pycocotools numbers, retina.eval, the way
back to torchvision) and mmdetection RetinaNet / GFL (raw outputs against a functional
reference); fine-tuning from a converted file with other classes.

Random weights stand in for the released files (no network here): torchvision's models
with seeded noise on every tensor, batch-norm statistics measured on the test images,
the last norm of each residual branch scaled to 0.2 (trained ResNets have small ones;
an undamped random ResNet amplifies float rounding ~1000x), class logits around -3 with
spread 1.5 and box deltas with spread 0.3, so that hundreds of boxes pass the threshold,
boxes 0.6 times the size of their anchors, so that some of them find the small crowns.
"""

from __future__ import annotations

import json
import logging

import pytest
import torch
from torchvision.models.detection import retinanet_resnet50_fpn, retinanet_resnet50_fpn_v2

import retina
from retina.convert import mmdet
from retina.convert.__main__ import run
from retina.data.coco import load_coco, read_rgb
from retina.infer.parity import random_images
from retina.training.checkpoint import load_checkpoint, module_from_checkpoint
from retina.training.coco_eval import coco_evaluate, to_coco_results
from retina.training.config import ROOT, compose_run
from retina.training.run import train
from tests.convert.mmdet_reference import forward, mmdet_state
from tests.helpers import evaluated

NEON = ROOT / "data" / "neon_trees"
VAL_ANN, VAL_IMAGES = NEON / "annotations" / "val.json", NEON / "val"
SIZE = 320  # torchvision's min_size = max_size, and the converted config's
BUILDERS = {"v1": retinanet_resnet50_fpn, "v2": retinanet_resnet50_fpn_v2}
# px, score: float rounding through a random ResNet-50 differs by CPU: v2's boxes were 0.0016 px
# apart on one 2-core machine (2026-12-07, the code of e233523 and of today alike), 1e-3 on others
BOX_TOL, SCORE_TOL = 4e-3, 1e-5


def neon_tiles(num: int) -> tuple[list[int], list[torch.Tensor]]:
    coco = load_coco(VAL_ANN)
    ids = sorted(coco.imgs)[:num]
    return ids, [read_rgb(VAL_IMAGES / coco.imgs[i]["file_name"]) for i in ids]


def perturbed_torchvision(variant: str, images: list[torch.Tensor]) -> torch.nn.Module:
    """torchvision's RetinaNet at SIZE px with non-trivial random weights (module docstring);
    v1 with batch-norm epsilon 0, as torchvision loads its COCO_V1 file."""
    torch.manual_seed(0)
    model = BUILDERS[variant](weights=None, weights_backbone=None, min_size=SIZE, max_size=SIZE)
    g = torch.Generator().manual_seed(1)
    norms = (torch.nn.BatchNorm2d, torch.nn.GroupNorm)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2 / m.weight[0].numel()) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
            elif isinstance(m, norms):
                m.weight.copy_(1 + 0.1 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None  # a plain average over the calibration batch
        floats = [im.float() / 255 for im in images]
        model.train()
        model.backbone(model.transform(floats)[0].tensors)
        model.eval()
        for name, m in model.backbone.body.named_modules():
            if name.endswith("bn3"):
                m.weight.mul_(0.2)
                m.bias.mul_(0.2)
            if variant == "v1" and isinstance(m, torch.nn.BatchNorm2d):
                m.eps = 0.0
        feats = list(model.backbone(model.transform(floats)[0].tensors).values())
        heads = model.head.classification_head, model.head.regression_head
        for head, pred, (spread, centre) in zip(heads, ("cls_logits", "bbox_reg"),
                                                ((1.5, -3.0), (0.3, 0.0))):
            layer = getattr(head, pred)
            out = torch.cat([layer(head.conv(f)).flatten() for f in feats])
            layer.weight.mul_(spread / out.std())
            layer.bias.copy_(centre + 0.1 * torch.randn(layer.bias.shape, generator=g))
        heads[1].bbox_reg.bias.view(-1, 4)[:, 2:] -= 0.5  # boxes 0.6 x their anchors: trees
    return model


def torchvision_detections(model, images: list[torch.Tensor]) -> list[dict]:
    """One batch, as retina's predictor batches them (both pad to the largest image)."""
    with torch.no_grad():
        return model([im.float() / 255 for im in images])


def nearest_pairs(a: dict, b: dict) -> tuple[float, float]:
    """Largest box (px) and score differences when each detection of ``a`` is paired with
    the nearest unpaired one of ``b`` of its label (by box corners: IoU cannot pair the
    zero-area boxes that clipping leaves at image borders)."""
    dist = torch.cdist(a["boxes"].double(), b["boxes"].double(), p=float("inf"))  # (D, D)
    dist[a["labels"][:, None] != b["labels"][None]] = float("inf")
    box = score = 0.0
    for i in range(len(dist)):
        j = int(dist[i].argmin())
        box = max(box, float(dist[i, j]))
        score = max(score, float((a["scores"][i] - b["scores"][j]).abs()))
        dist[:, j] = float("inf")
    return box, score


def assert_same(theirs: list[dict], ours: list[dict]) -> tuple[float, float]:
    """Same detections: same count, paired one-to-one with the same labels, boxes within
    BOX_TOL px and scores within SCORE_TOL; returns the largest differences."""
    worst = (0.0, 0.0)
    for a, b in zip(theirs, ours, strict=True):
        assert len(a["boxes"]) == len(b["boxes"]) > 100
        box, score = nearest_pairs(a, b)
        assert box <= BOX_TOL and score <= SCORE_TOL, (box, score)
        worst = (max(worst[0], box), max(worst[1], score))
    return worst


def one_class_stats(ids: list[int], dets: list[dict]) -> dict[str, float]:
    """pycocotools on NEON with every COCO label counted as the one class, Tree."""
    as_trees = [{**d, "labels": torch.zeros_like(d["labels"])} for d in dets]
    return coco_evaluate(load_coco(VAL_ANN), to_coco_results(ids, as_trees, [1]), ids)[0]


_CASES: dict[str, tuple] = {}  # converted once per variant, shared by the fixtures below


def converted(variant: str, tmp_path_factory) -> tuple:
    """(variant, torchvision model, converted output folder, NEON ids, images)."""
    if variant not in _CASES:
        ids, tiles = neon_tiles(2)
        images = tiles + random_images(2)  # random sizes: padding, P6/P7 steps of input // map
        model = perturbed_torchvision(variant, images)
        tmp = tmp_path_factory.mktemp(f"tv_{variant}")
        torch.save(model.state_dict(), tmp / "tv.pth")
        run(["torchvision", str(tmp / "tv.pth"), f"out={tmp / 'out'}",
              f"overrides=[data.min_size={SIZE},data.max_size={SIZE}]"])
        _CASES[variant] = (variant, model, tmp / "out", ids, images)
    return _CASES[variant]


@pytest.fixture(scope="module", params=["v1", "v2"])
def torchvision_case(request, tmp_path_factory):
    return converted(request.param, tmp_path_factory)


@pytest.fixture(scope="module")
def torchvision_v1(tmp_path_factory):
    return converted("v1", tmp_path_factory)


@pytest.fixture(scope="module")
def torchvision_v2(tmp_path_factory):
    return converted("v2", tmp_path_factory)


def test_torchvision_detections_and_coco_numbers_are_identical(torchvision_case):
    variant, model, out, ids, images = torchvision_case
    theirs = torchvision_detections(model, images)
    ours = retina.load(out / "model.json")(images)
    box, score = assert_same(theirs, ours)
    print(f"torchvision {variant}: max |box| {box:.2e} px, max |score| {score:.2e}")
    n = len(ids)
    theirs_map, ours_map = one_class_stats(ids, theirs[:n]), one_class_stats(ids, ours[:n])
    print(f"torchvision {variant}: NEON one-class mAP {theirs_map['mAP']:.6f} / "
          f"{ours_map['mAP']:.6f}, AR_100 {theirs_map['AR_100']:.6f} / {ours_map['AR_100']:.6f}")
    assert theirs_map["AR_100"] > 0
    assert ours_map == theirs_map
    # the checkpoint rebuilds to the same detector
    ckpt = load_checkpoint(out / "model.ckpt")
    assert ckpt["converted_from"]["variant"] == variant
    assert len(module_from_checkpoint(ckpt).class_names) == 91


def test_the_way_back_loads_into_torchvision(torchvision_case, tmp_path, caplog):
    variant, _, out, _, images = torchvision_case
    with caplog.at_level(logging.WARNING, logger="retina.convert.torchvision"):
        path = run(["to-torchvision", str(out / "model.ckpt"), f"out={tmp_path / 'back.pth'}"])
    assert ("bn_eps" in caplog.text) == (variant == "v1")
    back = BUILDERS[variant](weights=None, weights_backbone=None, num_classes=91,
                             min_size=SIZE, max_size=SIZE).eval()
    back.load_state_dict(torch.load(path, weights_only=True))  # strict
    if variant == "v1":  # not part of a state dict (torchvision: overwrite_eps)
        for m in back.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eps = 0.0
    assert_same(torchvision_detections(back, images[:2]), retina.load(out / "model.ckpt")(images[:2]))


def test_retina_eval_of_a_converted_checkpoint(torchvision_v2, tmp_path):
    variant, model, out, ids, images = torchvision_v2  # one variant is enough for this path
    coco = json.loads(VAL_ANN.read_text())
    coco["images"] = [im for im in coco["images"] if im["id"] in ids]
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] in ids]
    (tmp_path / "val.json").write_text(json.dumps(coco))
    ckpt = load_checkpoint(out / "model.ckpt")
    ckpt["hyper_parameters"]["cat_ids"] = [1] * 91  # every label counted as Tree
    torch.save(ckpt, tmp_path / "trees.ckpt")
    metrics = evaluated(tmp_path / "trees.ckpt", f"data.val_ann={tmp_path / 'val.json'}",
                        "data.size=null", f"data.min_size={SIZE}", f"data.max_size={SIZE}",
                        "data.resize=rcnn", "data.size_divisible=32", "data.num_workers=0",
                        data="neon_trees")
    expected = one_class_stats(ids, torchvision_detections(model, images[:len(ids)]))
    assert metrics["val/mAP"] == pytest.approx(expected["mAP"], abs=1e-7)
    assert metrics["val/AR_100"] == pytest.approx(expected["AR_100"], abs=1e-7) and expected["AR_100"] > 0


def test_fine_tuning_from_a_converted_file_with_other_classes(torchvision_v1, tmp_path, caplog):
    variant, _, out, _, _ = torchvision_v1  # one variant is enough for this path
    data = [f"data.train_ann={VAL_ANN}", f"data.train_images={VAL_IMAGES}",
            f"data.val_ann={VAL_ANN}", f"data.val_images={VAL_IMAGES}"]
    cfg = compose_run(["experiment=retinanet_r50_coco_tv", f"model.init_from={out / 'model.ckpt'}",
                       *data, "data.min_size=160", "data.max_size=160", "data.batch_size=2",
                       "data.num_workers=0", "debug=fdr", "trainer.accelerator=cpu",
                       "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"],
                      tmp_path / "run")
    with caplog.at_level(logging.INFO, logger="retina.training.init_from"):
        metrics = train(cfg)
    assert "re-initialised with the prior (the file predicts 91 classes, this model 1)" in caplog.text
    assert "Detector settings differ" not in caplog.text
    assert metrics["global_step"] == 1 and "val/mAP" in metrics


@pytest.mark.parametrize("model, style", [("gfl", "pytorch"), ("retinanet", "caffe")])
def test_mmdet_outputs_equal_the_functional_reference(model, style, tmp_path):
    state = mmdet_state(model, num_classes=80, seed=1)
    torch.save({"meta": {"epoch": 12}, "state_dict": state}, tmp_path / "mmdet.pth")
    run(["mmdet", str(tmp_path / "mmdet.pth"), f"out={tmp_path / 'out'}", f"style={style}"])
    predictor = retina.load(tmp_path / "out" / "model.json")
    assert predictor.class_names[0] == "person" and predictor.cat_ids[-1] == 90
    g = torch.Generator().manual_seed(3)
    image = (torch.rand(3, 100, 150, generator=g) * 255).round()  # padded to 128 x 160
    mean, std, rgb, caffe = mmdet.STYLES[style]
    images = torch.zeros(1, 3, 128, 160)
    images[0, :, :100, :150] = image / 255
    with torch.no_grad():
        ref = forward(image, state, model, mean, std, not rgb, caffe, (128, 160))
        ours = predictor.detector(images, torch.tensor([[100, 150]]))
    for theirs, mine in zip(ref[0] + ref[1], ours[0] + ours[1], strict=True):
        scale = theirs.abs().max()
        torch.testing.assert_close(mine / scale, theirs / scale, rtol=0, atol=1e-5)
