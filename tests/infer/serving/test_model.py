"""retina serve's model (retina/infer/serving/model.py): with runtime=auto and no cached graph
yet, the server answers at once with eager PyTorch and switches to ONNX Runtime once the
graph is built; the next start reads the cache."""

from __future__ import annotations

import threading

import torch

from retina.infer.parity import BOX_RTOL, match
from retina.infer.serving.model import load_served
from tests.infer.test_one_path import tiny_checkpoint


def test_auto_serves_eager_until_the_graph_is_built_then_switches(tiny_cfg, tmp_path):
    path, _ = tiny_checkpoint(tiny_cfg, tmp_path, "experiment=neon_retinanet",
                              "model.postprocess.score_thresh=0.2")
    served = load_served(path, "auto")
    assert served.runtime == "eager"  # nothing cached: eager at once, the graph in a thread
    tiles = [torch.randint(0, 256, (3, 200, 240), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(k)) for k in range(2)]
    eager = served.predict(tiles)
    builder = next(t for t in threading.enumerate() if t.name == "retina-graph")
    builder.join(timeout=600)
    assert served.runtime == "onnx" and served.info()["runtime"] == "onnx"
    assert sum(len(d["boxes"]) for d in eager) > 0
    for a, b in zip(eager, served.predict(tiles)):  # the same detections, another runtime
        pair = match(a, b)
        assert len(a["boxes"]) == len(b["boxes"]) and pair["unmatched"] == 0
        assert pair["box_rel"] <= BOX_RTOL
    assert load_served(path, "auto").runtime == "onnx"  # the next start: from the cache
    assert load_served(path, "eager").runtime == "eager"
