"""The notebooks run top to bottom in a Jupyter kernel."""

import os
import sys
from pathlib import Path

import nbformat
import pytest

from retina.analysis.explore import QUICKSTART_ENV
from retina.training.config import ROOT
from tests.helpers import NOTEBOOKS


def run(book: nbformat.NotebookNode, timeout: int = 900, env: dict | None = None,
        ) -> nbformat.NotebookNode:
    """Execute in the ``python3`` kernel of this interpreter (jupyter_client starts the kernel
    with ``sys.executable`` for it), from the repository root, with this checkout first on
    ``PYTHONPATH`` so that ``import retina`` is the code under test."""
    from nbclient import NotebookClient

    env = {**os.environ, **(env or {})}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]])
    env.pop("MPLBACKEND", None)  # the kernel's inline backend draws the figures into outputs
    client = NotebookClient(book, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT)}})
    return client.execute(env=env)


@pytest.mark.slow
@pytest.mark.notebook
def test_kernel_is_this_python_and_imports_this_checkout():
    book = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import os, sys, retina; print(sys.executable); print(retina.__file__); print(os.getcwd())")])
    out = run(book, timeout=120).cells[0].outputs[0]["text"].splitlines()
    assert Path(out[0]).resolve() == Path(sys.executable).resolve()
    assert Path(out[1]).resolve() == (ROOT / "retina" / "__init__.py").resolve()
    assert Path(out[2]).resolve() == ROOT.resolve()


@pytest.mark.slow
@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, trained_gfl):
    # the session's tiny GFL model, not whatever checkpoint this machine has under outputs/
    book = run(nbformat.read(path, as_version=4), env={QUICKSTART_ENV: str(trained_gfl.ckpt)})
    errors = [o for c in book.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors  # nbclient raises on the first error; this guards allow_errors cells
    images = sum("image/png" in o.get("data", {}) for c in book.cells if c.cell_type == "code"
                 for o in c.outputs)
    assert images >= 2, f"{path.name} drew {images} figures"
