"""The exported graphs' NMS (``Postprocess.padded``) keeps exactly the boxes of per-image,
per-class NMS: TorchScript through ``nms_rank``, ONNX through ONNX's NonMaxSuppression."""

from __future__ import annotations

import warnings

import onnxruntime as ort
import torch

from retina.ops.postprocess import padded_nms_rank
from tests.helpers import near_threshold_pairs, per_group_nms

K, IOU = 80, 0.5


class PaddedNMS(torch.nn.Module):
    def forward(self, boxes, scores, labels, keep):
        return padded_nms_rank(boxes, scores, labels, keep, K, IOU)


def candidates(batch: int, seed: int = 0):
    """(B, L) candidates: every group's near-threshold pairs, one in ten not a candidate."""
    boxes, scores, _, labels = near_threshold_pairs(batch, K, seed=seed)
    keep = torch.rand(len(boxes), generator=torch.Generator().manual_seed(seed)) > 0.1
    return boxes.reshape(batch, -1, 4), scores.reshape(batch, -1), labels.reshape(batch, -1), \
        keep.reshape(batch, -1)


def check(kept, rank, boxes, scores, labels, keep):
    """``kept`` is per-group NMS of the candidates by decreasing score; ``rank`` its place."""
    b, num = scores.shape
    idx = keep.flatten().nonzero().squeeze(1)
    image = idx // num
    expected = per_group_nms(boxes.flatten(0, 1)[idx], scores.flatten()[idx], image,
                             labels.flatten()[idx], IOU)
    assert set(kept.tolist()) == {int(idx[i]) for i in expected}
    flat = scores.flatten()[kept]
    assert (flat[:-1] >= flat[1:]).all()
    for i in range(b):
        assert rank[kept // num == i].tolist() == list(range(int((kept // num == i).sum())))


def test_torchscript_and_onnx_graphs_keep_per_image_per_class_nms(tmp_path):
    example = candidates(2, seed=1)
    path = tmp_path / "nms.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation notes; the tracer's note on B x K
        traced = torch.jit.trace(PaddedNMS(), example, check_trace=False)
        torch.onnx.export(PaddedNMS(), example, str(path), dynamo=False, opset_version=18,
                          input_names=["boxes", "scores", "labels", "keep"],
                          output_names=["kept", "rank"],
                          dynamic_axes={n: {0: "b", 1: "l"} for n in ("boxes", "scores",
                                                                       "labels", "keep")})
    session = ort.InferenceSession(str(path))
    for batch in (16, 3):  # 16 images x 80 classes at 1333 x 800; another batch than traced
        inputs = candidates(batch)
        check(*traced(*inputs), *inputs)
        feed = dict(zip(("boxes", "scores", "labels", "keep"), (t.numpy() for t in inputs)))
        kept, rank = (torch.from_numpy(a) for a in session.run(None, feed))
        check(kept, rank, *inputs)
