"""The package's import layers (see retina/__init__.py): a module imports only from lower
layers and its own folder, and no module imports an entry point."""

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "retina"
LAYERS = {
    # the ground floor: cli (the grammar) reads the option definitions and old paths below it
    "cli": -1, "conf": -2, "schema": -2, "compat": -2, "options": -2,
    "model": 0, "data": 0,
    "ops": 1,
    "assign": 2,
    "losses": 3,
    "training": 4,
    "export": 5, "analysis": 5, "sweeps": 5,
    "infer": 6,  # runs the exports (and exports a checkpoint to compare or time runtimes)
    "bench": 7,  # benchmarks run the predictors (retina.bench scene)
    "train": 8, "eval": 8, "predict": 8, "serve": 8, "convert": 8, "check": 8, "__main__": 8,
}


def part_of(module: str) -> str:
    """``retina.losses.gfl`` -> ``losses``."""
    return module.split(".")[1]


def imports(path: Path) -> list[tuple[int, str]]:
    """Every ``retina.*`` module imported by the file (module level and inside functions)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{a.name}" for a in node.names]
            found += [(node.lineno, n if node.module == "retina" else node.module) for n in names]
    return sorted((line, name) for line, name in found if name.startswith("retina."))


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p != PACKAGE / "__init__.py")


def test_every_part_of_the_package_has_a_layer():
    parts = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in modules()}
    assert parts == set(LAYERS)


def violations(path: Path, own: str, folder: str | None = None) -> list[str]:
    """Imports of ``path`` (in the part ``own``, in ``folder``: ``own`` by default) from its
    own layer or above, but its folder."""
    folder = folder or own
    return [
        f"{path.name}:{line} imports {name} (layer {LAYERS[part_of(name)]}) "
        f"from layer {LAYERS[own]}"
        for line, name in imports(path)
        if part_of(name) not in (own, folder) and LAYERS[part_of(name)] >= LAYERS[own]
    ]


def layer_of(path: Path) -> str:
    """The part a file belongs to; a folder's ``__main__.py`` (``python -m retina.export``,
    a command) is an entry point like ``retina/train.py``."""
    return "__main__" if path.name == "__main__.py" else path.relative_to(
        PACKAGE).parts[0].removesuffix(".py")


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_run_down_the_layers(path):
    wrong = violations(path, layer_of(path), path.relative_to(PACKAGE).parts[0].removesuffix(".py"))
    assert not wrong, "\n".join(wrong)


def test_the_checker_sees_wrong_imports(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from retina.training.run import build\n"
                   "import retina.eval\nfrom retina import train\nfrom retina.ops import nms_rank\n")
    assert [name for _, name in imports(bad)] == ["retina.training.run", "retina.eval",
                                                  "retina.train", "retina.ops"]
    assert len(violations(bad, "model")) == 4  # the network imports nothing of the package
    assert len(violations(bad, "training")) == 2  # only the entry points are above it
    assert len(violations(bad, "ops")) == 3  # its own folder is allowed


def test_every_folder_is_a_package():
    # setuptools' find (pyproject.toml) ships only folders with an __init__.py
    folders = {p.parent for p in modules()} - {PACKAGE}
    assert not [f.name for f in folders if not (f / "__init__.py").is_file()]


def test_no_module_sets_matplotlibs_backend():
    # a notebook's inline backend must survive `import retina...`: files are drawn with
    # matplotlib.figure.Figure, which needs no backend (matplotlib.use would switch it)
    calls = [f"{p.relative_to(PACKAGE)}:{node.lineno}" for p in modules()
             for node in ast.walk(ast.parse(p.read_text()))
             if isinstance(node, ast.Attribute) and node.attr == "use"
             and isinstance(node.value, ast.Name) and node.value.id == "matplotlib"]
    assert not calls


def test_the_code_layout_page_lists_the_layers():
    # docs/architecture.md, the page a newcomer reads first, says what the layers are
    page = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    rows = re.findall(r"^\| (ground|\d+) \| (.+?) \|", page, flags=re.M)
    listed = {}
    for layer, folders in rows:
        for name in re.findall(r"`([a-z_]+)(?:\.py|/)?`", folders):  # the folder column
            listed[name] = "ground" if layer == "ground" else int(layer)
    entries = {k for k, v in LAYERS.items() if v == max(LAYERS.values())}
    assert {k: v for k, v in listed.items() if k not in entries} == {
        k: "ground" if v < 0 else v for k, v in LAYERS.items() if k not in entries}
    assert entries <= set(listed)
