"""The README and docs/: a short front page, pages that build with MkDocs, links that stay
inside the repository and resolve."""

import re
import subprocess
import sys

import pytest

from retina.training.config import ROOT

README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
LINK = re.compile(r"\]\(([^)\s]+)\)")
# pages the README points to that are written beside other features, not here
def test_the_readme_is_a_short_front_page():
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    assert "make train" in text and "make test" in text
    # CI runs the README's test command
    assert "make test" in (ROOT / ".ci" / "run").read_text().splitlines()[-1]


@pytest.mark.parametrize("path", [README, *DOCS], ids=lambda p: p.name)
def test_links_stay_in_the_repository_and_resolve(path):
    for target in LINK.findall(path.read_text()):
        assert "://" not in target, f"{path.name}: link outside the repository: {target}"
        file = (path.parent / target.split("#")[0]).resolve()
        assert file.is_relative_to(ROOT), f"{path.name}: link outside the repository: {target}"
        assert file.exists(), f"{path.name}: {target} does not exist"


def test_nothing_points_at_files_beside_the_checkout():
    beside = "../" + "shared"
    files = [README, *DOCS, *(ROOT / "retina").rglob("*.py"), *(ROOT / "tests").rglob("*.py")]
    assert not [p.name for p in files if beside in p.read_text()]


def test_the_docs_build_with_mkdocs_strict(tmp_path):
    # a broken link, a missing page or an anchor that does not exist fails the build
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d",
                          str(tmp_path / "site")], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (tmp_path / "site" / "install" / "index.html").is_file()
