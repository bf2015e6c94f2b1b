"""``retina export ... opset= conf= iou= max_det=``: the options reach the graph
(the ONNX file's opset, and detections that obey the thresholds, checked with torchvision's
``box_iou``), on the session's tiny RetinaNet and NEON validation tiles."""

from __future__ import annotations

import onnx
import torch
from torchvision.ops import box_iou

import retina
from retina.data.coco import read_rgb
from retina.export.__main__ import main as export_main
from retina.training.config import ROOT


def close_pairs(det: dict, iou: float) -> int:
    """Same-class pairs of one image's detections whose IoU is above ``iou``."""
    same = det["labels"][:, None] == det["labels"][None, :]
    over = (box_iou(det["boxes"], det["boxes"]) > iou) & same
    return int(over.triu(diagonal=1).sum())


def test_export_options_reach_the_onnx_graph(trained_retinanet, tmp_path):
    tiles = sorted((ROOT / "data" / "neon_trees" / "val").glob("*.png"))[:3]
    images = [read_rgb(p) for p in tiles]
    # the checkpoint's own settings (threshold 0.005, NMS 0.5, 100 per image): pick options
    # that each change something here
    own = retina.load(trained_retinanet.ckpt)(images)
    scores = torch.cat([d["scores"] for d in own]).sort().values
    assert len(scores) > 20
    thresh = float(scores[len(scores) // 2] + scores[len(scores) // 2 + 1]) / 2  # the median
    assert sum(close_pairs(d, 0.3) for d in own) > 0  # pairs between IoU 0.3 and 0.5 here

    out = tmp_path / "model.onnx"
    assert export_main([f"model={trained_retinanet.ckpt}", "format=onnx", f"out={out}",
                        "opset=19", f"conf={thresh}", "iou=0.3", "max_det=7"]) == 0
    model = onnx.load(out)
    assert {o.domain: o.version for o in model.opset_import}[""] == 19
    dets = retina.load(out)(images)
    assert any(len(d["scores"]) == 7 for d in dets)  # max_det reached somewhere
    for det in dets:
        assert len(det["scores"]) <= 7
        assert (det["scores"] > thresh).all()
        assert close_pairs(det, 0.3 + 1e-4) == 0  # no same-class pair above the NMS threshold
