"""End-to-end runs: real training, evaluation, export and notebook runs, subprocesses of
``python -m retina...``, DDP, kill and resume, sweeps. Every test in this folder is slow
(``make test-quick`` and ``pytest -m "not slow"`` leave them out)."""

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # a conftest's hook sees the items of the whole session: mark only this folder's
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def exported(trained_retinanet, tmp_path_factory) -> dict[str, Path]:
    """The tiny RetinaNet (tests/conftest.py) in the three export formats."""
    from retina.export import export
    from retina.infer import from_checkpoint

    out = tmp_path_factory.mktemp("exported")
    predictor = from_checkpoint(trained_retinanet.ckpt)
    return {fmt: export(predictor, fmt, out / f"model{suffix}")
            for fmt, suffix in (("safetensors", ".safetensors"), ("torchscript", ".pt"),
                                ("onnx", ".onnx"))}
