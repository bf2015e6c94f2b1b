"""retina serve's command line (retina/serve.py): a bad option or a model that does not load
is one line and exit code 2, before any socket is bound."""

from __future__ import annotations

import pytest

import retina.infer.serving.server as server
from retina.options import ServeOptions
from retina.serve import API_KEY_ENV, main, serve


@pytest.fixture(autouse=True)
def no_socket(monkeypatch):
    """Every test here must stop before binding: a bind fails the test."""
    def bind(host, port):
        raise AssertionError(f"bound {host}:{port}")

    monkeypatch.setattr(server, "bind", bind)
    monkeypatch.delenv(API_KEY_ENV, raising=False)


def one_line(capsys, start: str) -> str:
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith(start), err
    return err


def exit_of(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as info:
        main(argv)
    return info.value.code


@pytest.mark.parametrize("argv, message", [
    ([], "error: missing model=..."),
    (["max_bach=4"], "error: unknown option 'max_bach' (did you mean max_batch?)"),
    (["port=http"], "error: port=http: expected a whole number, e.g. port=8000"),
    (["port=70000"], "error: port=70000: must be between 0 and 65535"),
    (["max_batch=0"], "error: max_batch=0: must be at least 1"),
    (["batch_timeout=-1"], "error: batch_timeout=-1.0: must be at least 0"),
    (["runtime=eagr"], "error: runtime=eagr: not one of auto, eager, onnx, openvino (did you mean eager?)"),
    (["host=0.0.0.0"], "error: host=0.0.0.0 serves other machines: set api_key=KEY (or "
                       "$RETINA_API_KEY), or keep host=127.0.0.1"),
])
def test_bad_options_are_one_line_naming_the_key(argv, message, looks_like_checkpoint,
                                                 capsys):
    argv = [f"model={looks_like_checkpoint}", *argv] if argv else argv
    assert exit_of(argv) == 2
    one_line(capsys, message)


def test_a_missing_model_file_suggests_its_neighbour(tmp_path, capsys):
    (tmp_path / "best.ckpt").write_bytes(b"")
    assert exit_of([f"model={tmp_path / 'best.ckp'}"]) == 2
    one_line(capsys, f"error: model={tmp_path / 'best.ckp'}: no such file (did you mean "
                     "best.ckpt?)")


@pytest.mark.parametrize("name, runtime, message", [
    ("m.ckpt", "auto", "is not a loadable PyTorch checkpoint"),
    ("m.onnx", "auto", "is not a loadable ONNX model"),
    ("m.onnx", "eager", "runtime=eager: m.onnx runs in ONNX Runtime; use runtime=auto"),
    ("m.txt", "auto", "unknown model file type; expected one of .json"),
])
def test_a_model_that_does_not_load_is_one_line_before_binding(name, runtime, message, tmp_path,
                                                               capsys):
    model = tmp_path / name
    model.write_text("not a model\n")
    assert serve(ServeOptions(model=str(model), runtime=runtime, port=0)) == 2
    assert message in one_line(capsys, "error: ")


def test_a_key_from_the_environment_allows_another_host(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(API_KEY_ENV, "k")
    model = tmp_path / "m.ckpt"
    model.write_text("not a model\n")
    assert serve(ServeOptions(model=str(model), host="0.0.0.0")) == 2  # past the host check
    assert "not a loadable PyTorch checkpoint" in one_line(capsys, "error: ")


def test_without_the_serve_extra_the_command_says_what_to_install(tmp_path, monkeypatch,
                                                                  capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "uvicorn" else real(name, *a))
    with pytest.raises(SystemExit):
        serve(ServeOptions(model=str(tmp_path / "m.ckpt")))
    one_line(capsys, "error: retina serve needs uvicorn: pip install 'retina-det[serve]'")
