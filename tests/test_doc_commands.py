"""Every command README.md and docs/ show passes the check its command line gets before it runs
(keys, values, choices, group options; the reader's files replaced by this checkout's), every
`make` target and package extra they name exists, and docs/commands.md is up to date."""

from __future__ import annotations

import re
import tomllib

import pytest

from retina import cli, options
from retina.training.config import ROOT
from tests.doc_commands import PAGES, DocCommand, as_here, code_lines, commands

DOCUMENTED = commands()


def check(name: str, argv: list[str]) -> None:
    """The check ``retina NAME ARGV`` gets before it runs (SystemExit 2 on a mistake)."""
    if cli.COMMANDS[name].config:  # train, check: Hydra commands
        cli.check_hydra_args(name, argv)
    elif name in ("eval", "report"):
        from retina.eval.settings import compose_evaluation

        opts, prefixed = cli.parse_command(name, argv)
        compose_evaluation(getattr(opts, "data", None), prefixed, "docs")
    elif name == "bench":
        from retina.bench.__main__ import OPTIONS

        assert argv[0] in OPTIONS, argv
        cli.parse_options(OPTIONS[argv[0]], argv[1:], "docs")
    elif name == "convert":
        from retina.convert.__main__ import COMMANDS as SOURCES
        from retina.data.to_coco import ConvertOptions

        if argv[0] in SOURCES:
            cli.check_keys(argv[2:], list(SOURCES[argv[0]][1]), "docs")
        else:
            cli.parse_options(ConvertOptions, argv[2:], "docs")
    elif name == "sweep-report":
        cli.parse_options(options.SweepReportOptions, argv[1:], "docs")
    else:
        cli.parse_command(name, argv)


def test_the_pages_show_commands_of_every_kind():
    names = {c.name for c in DOCUMENTED}
    assert len(DOCUMENTED) > 80
    assert names >= {"train", "eval", "predict", "export", "parity", "export-speed", "tile",
                     "convert", "bench", "report", "sweep-report"}


@pytest.mark.parametrize("cmd", DOCUMENTED, ids=str)
def test_every_documented_command_passes_its_check(cmd: DocCommand, tmp_path, capsys,
                                                  looks_like_checkpoint):
    if cmd.name in ("--help", "--version"):
        return
    assert cmd.name in cli.COMMANDS, f"{cmd}: no command {cmd.name}"
    argv = [cmd.name, *as_here(cmd, looks_like_checkpoint, tmp_path)]
    try:
        check(cmd.name, argv[1:])
    except SystemExit:
        pytest.fail(f"{cmd}\n{capsys.readouterr().err}")


def test_a_wrong_key_in_a_page_would_fail(looks_like_checkpoint):
    # the check is not a formality: a misspelt key, a bad value, a missing file each fail
    model = looks_like_checkpoint
    for argv in (["train", "loss.gama=2"], ["train", "loss.gamma=2"],
                 ["predict", f"model={model}", "images=.", "out=o", "conff=0.3"],
                 ["export", f"model={model}", "format=tflite"], ["eval", "model=m.onnx"]):
        with pytest.raises(SystemExit):
            check(argv[0], argv[1:])


def test_every_make_target_the_pages_name_exists():
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][\w-]*):", makefile, flags=re.M))
    for page in PAGES:
        for line in code_lines(page.read_text()):
            if line.startswith("make "):
                target = line.split()[1]
                assert target in targets, f"{page.name}: make {target}"


def test_every_extra_the_pages_name_exists():
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"])
    named = set()
    for page in PAGES:
        named |= {e.strip() for group in re.findall(r"(?:retina-det|\.)\[([\w,\s-]+)\]",
                                                     page.read_text()) for e in group.split(",")}
    assert named and named <= extras, named - extras


def test_the_install_page_names_the_extras_there_are():
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"])
    page = (ROOT / "docs" / "install.md").read_text()
    rows = re.findall(r"^\| ((?:`[\w-]+`(?:, )?)+) \|", page, flags=re.M)
    listed = {name for row in rows for name in re.findall(r"`([\w-]+)`", row)}
    assert listed == extras


def test_the_index_lists_every_command_and_training_every_group_option():
    index = (ROOT / "docs" / "index.md").read_text()
    assert not [n for n in cli.COMMANDS if f"`retina {n}`" not in index]
    training = (ROOT / "docs" / "training.md").read_text()
    rows = [(g, listed) for g, listed in re.findall(r"^\| `([\w/]+)` \| (.+?) \|", training,
                                                    flags=re.M) if (cli.CONF_DIR / g).is_dir()]
    assert len(rows) >= 10
    for group, listed in rows:
        assert set(re.findall(r"`(\w+)`", listed)) == set(cli.group_choices(group)), group


def test_every_module_the_pages_run_exists():
    import importlib.util

    for page in PAGES:
        for line in code_lines(page.read_text()):
            if line.startswith("python -m retina"):
                module = line.split()[2]
                assert importlib.util.find_spec(module), f"{page.name}: {module}"


def test_the_commands_page_is_made_from_the_code():
    page = (ROOT / "docs" / "commands.md").read_text()
    assert page.strip() == cli.markdown().strip(), (
        "docs/commands.md is out of date: python -m retina.cli > docs/commands.md")
