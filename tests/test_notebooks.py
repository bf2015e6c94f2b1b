"""The notebooks are committed without outputs and import only retina (they run in
e2e/test_notebooks.py)."""

import nbformat

from tests.helpers import NOTEBOOKS


def test_notebooks_exist_and_are_committed_without_outputs():
    assert [p.name for p in NOTEBOOKS] == [
        "01_quickstart.ipynb", "02_focal_loss.ipynb", "03_gfl_distributions.ipynb"]
    for path in NOTEBOOKS:
        book = nbformat.read(path, as_version=4)
        nbformat.validate(book)
        code = [c for c in book.cells if c.cell_type == "code"]
        assert code, path.name
        dirty = [i for i, c in enumerate(code) if c.outputs or c.execution_count is not None]
        assert not dirty, f"{path.name}: code cells {dirty} have outputs; strip them: make strip-notebooks"


def test_notebooks_import_only_from_retina():
    """No logic of their own: third-party imports are limited to display and tensors."""
    allowed = {"logging", "matplotlib.pyplot", "torch", "IPython.display"}
    for path in NOTEBOOKS:
        book = nbformat.read(path, as_version=4)
        for cell in book.cells:
            if cell.cell_type != "code":
                continue
            for line in cell.source.splitlines():
                words = line.split()
                if words[:1] == ["import"]:
                    assert words[1] in allowed, f"{path.name}: {line}"
                elif words[:1] == ["from"]:
                    assert words[1] == "retina" or words[1].startswith("retina.") or words[1] in allowed, (
                        f"{path.name}: {line}")
