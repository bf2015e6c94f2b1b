"""The commands shown in README.md and docs/*.md, as a user would copy them, and the check each
command line gets before it runs (tests/test_doc_commands.py checks every one of them;
tests/e2e/test_doc_commands.py runs the ones that run in seconds on tiny data)."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from retina import cli, options
from retina.training.config import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NEON = ROOT / "data" / "neon_trees"
# what stands for a file or folder a reader has (a checkpoint, their images) -> one here
SOME_JSON = NEON / "annotations" / "val.json"
SOME_DIR = NEON / "val"


@dataclass(frozen=True)
class DocCommand:
    page: str
    line: str  # as written (continuations joined, comment dropped)
    argv: list[str]  # after `retina`, optional [parts] and `...` dropped

    @property
    def abbreviated(self) -> bool:
        """``retina predict ... tile=400``: a bare ``...`` stands for the options left out."""
        return "..." in self.line.split()

    @property
    def name(self) -> str:
        return self.argv[0] if self.argv else ""

    def __str__(self) -> str:
        return f"{self.page}: {self.line}"


def code_lines(text: str) -> list[str]:
    """The lines of the fenced code blocks of a page, continuations joined, and the inline code
    spans that are commands (```retina train loss=ohem```)."""
    lines = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S):
        lines += re.sub(r"\\\n\s*", " ", block).splitlines()  # continuations joined
    outside = re.sub(r"```.*?```", "", text, flags=re.S)
    lines += [span for span in re.findall(r"`([^`\n]+)`", outside) if span.startswith("retina ")
              and "=" in span]
    return [line.strip().removeprefix("$ ") for line in lines]


def commands(prefix: str = "retina ") -> list[DocCommand]:
    """Every command line starting with ``prefix`` on the pages."""
    found = []
    for page in PAGES:
        for line in code_lines(page.read_text()):
            if not line.startswith(prefix) or line.startswith("retina COMMAND"):
                continue
            line = re.sub(r"\s+#.*$", "", line).strip()  # a trailing comment
            line = re.split(r"\s{3,}", line)[0]  # a description (the help's examples)
            bare = re.sub(r"\s\[[^\[\]]*(\[[^\[\]]*\][^\[\]]*)*\]", "", line)  # [optional]
            argv = [a[:-3] if a.endswith("...") and not a.endswith("=...") else a
                    for a in shlex.split(bare)[1:] if a not in ("...", "\\")]
            if argv and not re.fullmatch(r"[A-Z_]+", argv[0]):  # `retina NAME` as a pattern
                found.append(DocCommand(page.name, line, argv))
    return found


def as_here(cmd: DocCommand, model: Path, tmp: Path) -> list[str]:
    """The command's arguments with the reader's files replaced by ones of this checkout:
    ``model=`` by ``model``, other files and folders that must exist by NEON's, outputs into
    ``tmp``. Keys and values are kept, so a wrong one still fails."""
    schema = cli.COMMANDS[cmd.name].options if cmd.name in cli.COMMANDS else None
    rules = options.rules_of(schema) if schema else {}
    out = []
    for arg in cmd.argv[1:]:
        key, eq, value = arg.partition("=")
        hydra = cli.COMMANDS[cmd.name].config if cmd.name in cli.COMMANDS else None
        rule = rules.get(key) or next((r for p, r in options.TRAIN_RULES.items()
                                       if hydra and p == key), None)
        model_file = ("ckpt_path", "model.init_from") if hydra else ("model",)
        if eq and key in model_file and not Path(value).exists():
            arg = f"{key}={model}"
        elif eq and rule is not None and rule.exists and not Path(value).exists():
            stand_in = {"dir": SOME_DIR, "glob": SOME_DIR, "json": SOME_JSON}.get(rule.exists, model)
            arg = f"{key}={stand_in}"
        elif eq and key in ("out", "draw") and value not in ("true", "false"):
            arg = f"{key}={tmp / Path(value).name}"
        out.append(arg)
    if cmd.abbreviated:
        out += completed(cmd.name, out, model, tmp)
    return out


def completed(name: str, argv: list[str], model: Path, tmp: Path) -> list[str]:
    """What an abbreviated command leaves out (``...``): its required options, and for
    ``data=coco`` training the data's paths."""
    given = {a.split("=", 1)[0] for a in argv}
    if cli.COMMANDS[name].config:
        coco = {"data.train_ann": SOME_JSON, "data.val_ann": SOME_JSON,
                "data.train_images": SOME_DIR, "data.val_images": SOME_DIR}
        return [f"{k}={v}" for k, v in coco.items() if k not in given] if "data=coco" in argv else []
    schema = cli.COMMANDS[name].options
    if schema is None:
        return []
    fill = {"model": model, "images": SOME_DIR, "out": tmp / "out", "ann": SOME_JSON,
            "results": SOME_JSON, "format": "coco"}
    required = [k for k in options.rules_of(schema) if options.default_of(schema, k) == "???"]
    return [f"{k}={fill[k]}" for k in required if k not in given]
