"""Which runtime runs a checkpoint (retina.infer.runtimes.choose_runtime), and the graph
cache of runtime=auto (retina.infer.graph_cache), with the export faked: the keys, staleness,
the atomic write, the fallback folder, the postprocess a cached graph holds. (The real runs:
e2e/test_fast_cpu.py.)"""

from __future__ import annotations

import logging
import os
from types import SimpleNamespace

import pytest
import torch

from retina.export.meta import ExportMeta
from retina.infer import graph_cache
from retina.infer.graph_cache import CachedGraphPredictor, cache_root, cached_graph
from retina.infer.runtimes import choose_runtime

POST = {"score_thresh": 0.05, "nms_thresh": 0.5, "topk": 1000, "max_det": 100}


def meta(**changes) -> ExportMeta:
    return ExportMeta(model={"postprocess": dict(POST)}, class_names=["a"], cat_ids=[1],
                      **({"size": 448} | changes))


def test_auto_takes_onnx_runtime_on_a_cpu():
    assert choose_runtime("auto", meta(), "cpu")[0] == "onnx"
    assert choose_runtime("eager", meta(), "cpu") == ("eager", "runtime=eager")
    assert choose_runtime("openvino", meta(), "cpu")[0] == "openvino"


@pytest.mark.parametrize("model_meta, device, why", [
    (meta(size=None, min_size=800, max_size=1333), "cpu", "min_size=800 / max_size=1333"),
    (meta(), "cuda", "the model runs on cuda"),
])
def test_auto_falls_back_to_eager_and_says_why(model_meta, device, why):
    chosen, reason = choose_runtime("auto", model_meta, device)
    assert chosen == "eager" and why in reason
    with pytest.raises(ValueError, match=f"runtime=onnx: .*{why}.*use runtime=eager"):
        choose_runtime("onnx", model_meta, device)


def test_without_the_package_auto_is_eager_and_a_named_runtime_an_error(monkeypatch):
    monkeypatch.setattr("retina.infer.runtimes.installed", lambda runtime: False)
    chosen, why = choose_runtime("auto", meta(), "cpu")
    assert chosen == "eager" and "pip install 'retina-det[export]'" in why
    with pytest.raises(ValueError, match=r"runtime=openvino: openvino is not installed \(pip "
                                         r"install 'retina-det\[openvino\]'\)"):
        choose_runtime("openvino", meta(), "cpu")


def test_an_unknown_runtime_gets_the_nearest():
    with pytest.raises(ValueError, match=r"runtime=onnxx: not one of auto, eager, onnx, "
                                         r"openvino \(did you mean onnx\?\)"):
        choose_runtime("onnxx", meta(), "cpu")


# ---------------------------------------------------------------- the cache


class Source:
    """What the cache reads of an eager Predictor: metadata and a postprocess."""

    def __init__(self) -> None:
        self.meta = meta()
        self.postprocess = SimpleNamespace(**POST)

    def set_postprocess(self, **settings):
        for key, value in settings.items():
            if value is not None:
                setattr(self.postprocess, key, value)
                self.meta.model["postprocess"][key] = value
        return self


@pytest.fixture
def exports(monkeypatch):
    """The graphs 'exported': (format, postprocess) of each; the file holds the settings."""
    made = []

    def fake_export(source, fmt, out, resize=True):
        assert not resize  # cached graphs take images of the input size
        made.append((fmt, dict(source.meta.model["postprocess"])))
        out.write_text(repr(made[-1]))
        return out

    monkeypatch.setattr(graph_cache, "export", fake_export)
    return made


def test_a_graph_is_exported_once_per_content_and_settings(tmp_path, exports, caplog):
    model = tmp_path / "best.ckpt"
    model.write_bytes(b"weights 1")
    caplog.set_level(logging.INFO, logger="retina.infer.graph_cache")
    first = cached_graph(Source(), "onnx", model)
    assert first.parent.parent == tmp_path / ".best.ckpt.graphs" and first.name == "model.onnx"
    assert cached_graph(Source(), "onnx", model) == first and len(exports) == 1
    assert "(cached)" in caplog.text
    other = Source().set_postprocess(score_thresh=0.01)  # another graph, both kept
    assert cached_graph(other, "onnx", model) != first and first.is_file()
    assert cached_graph(Source(), "openvino", model).name == "model.xml"
    os.utime(model, (0, 0))  # touched: the same content, the same graph
    assert cached_graph(Source(), "onnx", model) == first and len(exports) == 3
    model.write_bytes(b"weights 2")  # retrained: stale, rebuilt, the old entries removed
    fresh = cached_graph(Source(), "onnx", model)
    assert fresh != first and not first.exists() and len(exports) == 4
    assert [p.name for p in (tmp_path / ".best.ckpt.graphs").iterdir()] == [fresh.parent.name]


def test_a_failed_export_leaves_nothing(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("exporter crashed")

    monkeypatch.setattr(graph_cache, "export", broken)
    model = tmp_path / "best.ckpt"
    model.write_bytes(b"w")
    with pytest.raises(RuntimeError, match="exporter crashed"):
        cached_graph(Source(), "onnx", model)
    assert list((tmp_path / ".best.ckpt.graphs").iterdir()) == []


def test_a_read_only_folder_caches_in_the_users_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home_cache"))
    monkeypatch.setattr(graph_cache.os, "access", lambda path, mode: False)
    root = cache_root(tmp_path / "shared" / "best.ckpt")
    assert root.parent == tmp_path / "home_cache" / "retina" / "graphs"
    assert root.name.startswith("best.ckpt-")


class FakeGraph:
    """A loaded graph: three detections with decreasing scores, whatever the images."""

    def run(self, images):
        b = len(images)
        return {"boxes": torch.tensor([[[0.0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]]]
                                      ).repeat(b, 1, 1),
                "scores": torch.tensor([[0.9, 0.3, 0.06]]).repeat(b, 1),
                "labels": torch.zeros(b, 3, dtype=torch.long),
                "num_dets": torch.full((b,), 3)}


def test_stricter_settings_reuse_the_graph_looser_ones_rebuild_it(tmp_path, monkeypatch):
    model = tmp_path / "best.ckpt"
    model.write_bytes(b"w")
    built = []
    monkeypatch.setattr(graph_cache, "cached_graph",
                        lambda source, runtime, file: built.append(
                            dict(source.meta.model["postprocess"])) or file)
    monkeypatch.setattr(graph_cache, "load_onnx", lambda path, threads=None: FakeGraph())
    predictor = CachedGraphPredictor(Source(), "onnx", model)
    image = torch.zeros(3, 448, 448, dtype=torch.uint8)
    assert len(predictor([image])[0]["boxes"]) == 3 and built[-1]["score_thresh"] == 0.05
    predictor.set_postprocess(score_thresh=0.25, max_det=50)  # stricter: the same graph,
    (det,) = predictor([image])  # its sorted output cut at 0.25
    torch.testing.assert_close(det["scores"], torch.tensor([0.9, 0.3]))
    assert len(built) == 1
    assert predictor.meta.model["postprocess"]["score_thresh"] == 0.25  # what it does
    predictor.set_postprocess(score_thresh=0.01, nms_thresh=0.6)  # looser: another graph
    predictor([image])
    assert len(built) == 2 and built[-1]["score_thresh"] == 0.01 and built[-1]["nms_thresh"] == 0.6
    assert built[-1]["max_det"] == 100  # 50 is stricter than the model's own
    with pytest.raises(ValueError, match="not a postprocess setting: conf"):
        predictor.set_postprocess(conf=0.3)
