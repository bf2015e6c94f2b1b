"""One inference path (``retina.ops.inference.detect``): validation, the Predictor and the
exported TorchScript / ONNX graphs give the same detections, for a sigmoid head and for a
softmax head with a background channel (whose exports the graphs once lacked)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from retina.export.formats import export
from retina.infer.parity import match
from retina.infer.predictor import from_checkpoint
from retina.infer.runtimes import load
from retina.training.checkpoint import module_from_checkpoint
from retina.training.run import build


def tiny_checkpoint(tiny_cfg, tmp_path, *overrides: str):
    """A tiny model of the real config, its class predictor given spread-out seeded weights
    (so scores differ, not ties at the prior), saved as a checkpoint; and its datamodule."""
    datamodule, module = build(tiny_cfg("data.size=160", *overrides))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in module.detector.head.cls_pred.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
                "epoch": 0, "global_step": 0}, path)
    return path, datamodule


@pytest.mark.parametrize("loss", ["focal", "softmax_focal"])
def test_validation_predictor_and_graphs_detect_the_same(loss, tiny_cfg, tmp_path):
    path, datamodule = tiny_checkpoint(tiny_cfg, tmp_path, "experiment=neon_retinanet",
                                       f"loss={loss}", "model.postprocess.score_thresh=0.2")
    dataset = datamodule.val_dataset
    batch = datamodule.collate_fn([dataset[i] for i in range(2)])
    images = [im.as_subclass(torch.Tensor) for im in _raw_images(dataset, 2)]

    predictor = from_checkpoint(path)
    predictor.fold_bn = False  # validation runs the network as trained
    assert predictor.detector.head.background_class == (loss == "softmax_focal")
    validated = module_from_checkpoint(path).predict_batch(batch)
    assert sum(len(d["boxes"]) for d in validated) > 5  # something to compare
    eager = predictor(images)
    for a, b in zip(eager, validated):  # the validation path, bit for bit
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    folded = from_checkpoint(path)(images)  # BN folded into the convs: float rounding
    for fmt in ("torchscript", "onnx"):
        graph = load(export(from_checkpoint(path), fmt, tmp_path / f"model.{fmt}"))
        for runtime in (folded, graph(images)):
            for ref, got in zip(eager, runtime):
                m = match(ref, got)
                assert m["unmatched"] == 0 and m["box_rel"] <= 1e-3, (fmt, m)
                assert m["score_abs"] <= 1e-4, (fmt, m)


def _raw_images(dataset, num: int) -> list[torch.Tensor]:
    """The first ``num`` validation images as stored: (3, H, W) uint8, no transforms."""
    transforms, dataset.transforms = dataset.transforms, None
    try:
        return [dataset[i][0] for i in range(num)]
    finally:
        dataset.transforms = transforms


def test_a_checkpoint_predicts_without_importing_lightning(tiny_cfg, tmp_path):
    """Inference builds the Detector, not the training module: `retina serve` and
    `retina predict` start 3 s sooner on a 2-core machine (#34 asks /health within 10 s)."""
    path, _ = tiny_checkpoint(tiny_cfg, tmp_path, "experiment=neon_gfl")
    code = ("import sys, torch, retina; p = retina.load(sys.argv[1], runtime='eager'); "
            "d = p([torch.zeros(3, 64, 64, dtype=torch.uint8)]); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('lightning', 'pytorch_lightning', 'torchmetrics')))")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "[]", out
