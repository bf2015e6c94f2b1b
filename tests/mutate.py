"""Mutation testing of the maths and data-reading modules against the fast tests that cover them.

    python -m tests.mutate                      # 40 mutants of each module of MODULES (`make mutate`)
    python -m tests.mutate retina/assign/atss.py --sample 0     # every mutant of one module

Each mutant is one small change of one module's syntax tree (the operators of
:class:`Sites`: a comparison moved at its boundary, + and -, * and / swapped, a term or
factor dropped, a constant 0 <-> 1, a ``.detach()`` dropped, min and max swapped, & and |
swapped, a negation dropped). The module is written back with ``ast.unparse`` into a private
copy of the checkout (``retina/``, ``tests/``, ``pyproject.toml``; ``data`` a link), never into
the checkout itself, so an interrupted run leaves nothing to restore. The copy runs the fast
tests of that module (``MODULES``, ``-m "not slow" -x``) in a process forked from one that has
already imported torch, Lightning and pytest (no import per mutant); failing tests or a run
past ``--timeout`` seconds kill the mutant, passing tests let it survive. Before its mutants,
each module's unmutated ``ast.unparse`` text must pass its tests in the copy. All mutants of
the 18 modules take hours on 2 cores; ``make mutate`` draws 40
per module with a fixed seed (564, the same ones every run), about 40 minutes.

Left alone (not mutated): docstrings and other strings, type annotations (never evaluated,
``from __future__ import annotations``), default values of arguments and fields (settings
the configs pass explicitly), ``raise`` statements (messages), logging calls.

The report (``outputs/mutate/report.md`` and ``.json``) lists killed / total per module and
every surviving mutant with its line; docs/testing.md keeps the last one's numbers and why
each survivor is harmless or which test now kills it.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# module -> the fast test files that cover it (every file under retina/ops, retina/assign and
# retina/losses must be here: a new or renamed module is an error until it is mapped)
GRADIENTS, FUNCTIONAL = "tests/losses/test_gradients.py", "tests/losses/test_functional.py"
CRITERIA, RETINANET = "tests/losses/test_criteria.py", "tests/losses/test_retinanet.py"
GFL = "tests/losses/test_gfl.py"
ASSIGN = ["tests/assign/test_boundaries.py", "tests/assign/test_max_iou.py",
          "tests/assign/test_atss.py", "tests/assign/test_common.py"]
MODULES: dict[str, list[str]] = {
    "retina/ops/boxes.py": ["tests/ops/test_boxes.py", "tests/ops/test_boundaries.py", CRITERIA,
                            GFL, "tests/ops/test_postprocess.py"],
    "retina/ops/levels.py": ["tests/ops/test_levels.py", "tests/ops/test_boundaries.py", GFL,
                             "tests/ops/test_postprocess.py"],
    "retina/ops/postprocess.py": ["tests/ops/test_boundaries.py", "tests/ops/test_postprocess.py",
                                  "tests/export/test_graph_nms.py"],
    "retina/ops/window_merge.py": ["tests/infer/test_sliced.py"],
    "retina/ops/inference.py": ["tests/ops/test_inference.py", "tests/infer/test_one_path.py"],
    "retina/assign/common.py": ASSIGN + [CRITERIA, GRADIENTS, GFL, RETINANET],
    "retina/assign/max_iou.py": ASSIGN + [CRITERIA],
    "retina/assign/atss.py": ASSIGN + [GFL],
    "retina/assign/ceiling.py": ["tests/assign/test_ceiling.py"],
    # fast, strong tests first: -x stops a killed mutant's run at its first failure
    "retina/losses/functional.py": [GRADIENTS, FUNCTIONAL, CRITERIA, RETINANET, GFL],
    "retina/losses/criterion.py": [CRITERIA, GRADIENTS, GFL, RETINANET],
    "retina/losses/retinanet.py": [CRITERIA, GRADIENTS, RETINANET],
    "retina/losses/gfl.py": [GFL, GRADIENTS, CRITERIA],
    "retina/model/head.py": ["tests/model/test_heads_init.py", "tests/model/test_head.py",
                             "tests/model/test_gfl_head.py"],
    "retina/model/gfl_head.py": ["tests/model/test_heads_init.py", "tests/model/test_gfl_head.py",
                                 GFL],
    "retina/data/coco.py": ["tests/data/test_coco.py", "tests/data/test_reader_edges.py",
                            "tests/data/test_image_checks.py"],
    "retina/data/voc.py": ["tests/data/test_voc.py", "tests/data/test_reader_edges.py",
                           "tests/data/test_to_coco.py"],
    "retina/data/yolo.py": ["tests/data/test_yolo.py", "tests/data/test_reader_edges.py",
                            "tests/data/test_to_coco.py"],
}
MATHS_DIRS = ("retina/ops", "retina/assign", "retina/losses")

# ---------------------------------------------------------------- the mutation operators

CMP_SWAP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt,
            ast.Eq: ast.NotEq, ast.NotEq: ast.Eq}
BIN_SWAP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult,
            ast.BitAnd: ast.BitOr, ast.BitOr: ast.BitAnd}
SYMBOL = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=",
          ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.BitAnd: "&",
          ast.BitOr: "|", ast.And: "and", ast.Or: "or"}
NAME_SWAP = {"min": "max", "max": "min", "minimum": "maximum", "maximum": "minimum",
             "amin": "amax", "amax": "amin"}


@dataclass(frozen=True)
class Mutant:
    module: str
    index: int  # position of the node in ast.walk order
    op: str  # what the mutation does
    line: int
    code: str  # the original expression (shortened)


class Sites:
    """Every mutation of a module: ``(node index in ast.walk order, name, apply)`` where
    ``apply(node)`` changes a node of a copied tree in place or returns its replacement."""

    def __init__(self, tree: ast.Module) -> None:
        self.skip: set[int] = set()
        self._mark_skipped(tree)
        self.nodes = list(ast.walk(tree))

    def _mark_skipped(self, tree: ast.Module) -> None:
        def drop(node: ast.AST | None) -> None:
            if node is not None:
                self.skip.update(id(n) for n in ast.walk(node))

        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                for d in node.args.defaults + [d for d in node.args.kw_defaults if d]:
                    drop(d)
                if not isinstance(node, ast.Lambda):
                    drop(node.returns)
            elif isinstance(node, ast.arg):
                drop(node.annotation)
            elif isinstance(node, ast.AnnAssign):
                drop(node.annotation)
                drop(node.value)  # dataclass fields and annotated constants: settings
            elif isinstance(node, ast.Raise):
                drop(node)
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and (
                    isinstance(node.func.value, ast.Name) and node.func.value.id in ("log", "logger",
                                                                                    "logging")):
                drop(node)
            elif isinstance(node, ast.If) and "__name__" in ast.unparse(node.test):
                drop(node)
            elif isinstance(node, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
                drop(node)

    def __iter__(self):
        for i, node in enumerate(self.nodes):
            if id(node) in self.skip:
                continue
            yield from ((i, name, fn) for name, fn in self._mutations(node))

    @staticmethod
    def _mutations(node: ast.AST):
        if isinstance(node, ast.Compare):
            for k, op in enumerate(node.ops):
                if type(op) in CMP_SWAP:
                    new = CMP_SWAP[type(op)]

                    def swap(n, k=k, new=new):
                        n.ops[k] = new()

                    yield f"{SYMBOL[type(op)]} -> {SYMBOL[new]}", swap
        elif isinstance(node, ast.BinOp) and type(node.op) in BIN_SWAP:
            new = BIN_SWAP[type(node.op)]

            def swap_bin(n, new=new):
                n.op = new()

            yield f"{SYMBOL[type(node.op)]} -> {SYMBOL[new]}", swap_bin
            if isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div)):
                yield f"drop `{SYMBOL[type(node.op)]} right`", lambda n: n.left
        elif isinstance(node, ast.AugAssign) and type(node.op) in BIN_SWAP:
            new = BIN_SWAP[type(node.op)]

            def swap_aug(n, new=new):
                n.op = new()

            yield f"{SYMBOL[type(node.op)]}= -> {SYMBOL[new]}=", swap_aug
        elif isinstance(node, ast.BoolOp):
            new = ast.Or if isinstance(node.op, ast.And) else ast.And

            def swap_bool(n, new=new):
                n.op = new()

            yield f"{SYMBOL[type(node.op)]} -> {SYMBOL[new]}", swap_bool
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.Not, ast.Invert)):
            symbol = {ast.USub: "-", ast.Not: "not", ast.Invert: "~"}[type(node.op)]
            yield f"drop unary `{symbol}`", lambda n: n.operand
        elif isinstance(node, ast.Constant) and type(node.value) in (int, float, bool):
            v = node.value
            if isinstance(v, bool):
                new_v = not v
            elif v == 0:
                new_v = type(v)(1)
            elif v == 1:
                new_v = type(v)(0)
            else:
                new_v = v + 1

            def set_const(n, new_v=new_v):
                n.value = new_v

            yield f"{v!r} -> {new_v!r}", set_const
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr == "detach" and not node.args:
                yield "drop .detach()", lambda n: n.func.value
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in NAME_SWAP:
                def swap_name(n, new=NAME_SWAP[name]):
                    if isinstance(n.func, ast.Attribute):
                        n.func.attr = new
                    else:
                        n.func.id = new

                yield f"{name} -> {NAME_SWAP[name]}", swap_name
            keys = [k.arg for k in node.keywords]
            if name in ("clamp", "clamp_", "clip") and keys in (["min"], ["max"]):
                def swap_kw(n):
                    n.keywords[0].arg = "max" if n.keywords[0].arg == "min" else "min"

                yield f"clamp({keys[0]}=) -> clamp({'max' if keys[0] == 'min' else 'min'}=)", swap_kw


def mutants_of(module: str) -> tuple[str, list[Mutant]]:
    source = (ROOT / module).read_text()
    tree = ast.parse(source)
    out = []
    sites = Sites(tree)
    for i, name, _ in sites:
        node = sites.nodes[i]
        code = ast.get_source_segment(source, node) or ast.unparse(node)
        code = " ".join(code.split())
        out.append(Mutant(module, i, name, getattr(node, "lineno", 0),
                          code if len(code) <= 70 else code[:67] + "..."))
    return source, out


def mutated_source(source: str, mutant: Mutant) -> str:
    tree = ast.parse(source)
    sites = Sites(tree)
    for i, name, apply in sites:
        if i == mutant.index and name == mutant.op:
            node = sites.nodes[i]
            new = apply(node)
            if new is not None and new is not node:  # a replacement: put it in the parent
                _replace(tree, node, new)
            return ast.unparse(ast.fix_missing_locations(tree))
    raise LookupError(f"no mutant {mutant}")


def _replace(tree: ast.AST, old: ast.AST, new: ast.AST) -> None:
    for parent in ast.walk(tree):
        for field, value in ast.iter_fields(parent):
            if value is old:
                setattr(parent, field, new)
                return
            if isinstance(value, list):
                for k, item in enumerate(value):
                    if item is old:
                        value[k] = new
                        return
    raise LookupError("node not found")


# ---------------------------------------------------------------- running the tests in a copy


def make_copy(where: Path) -> Path:
    """A private copy of what the tests read: retina/, tests/, pyproject.toml, conf and data."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "retina", where / "retina", ignore=ignore, symlinks=True)
    shutil.copytree(ROOT / "tests", where / "tests", ignore=ignore, symlinks=True)
    shutil.copy(ROOT / "pyproject.toml", where)
    os.symlink("retina/conf", where / "conf")
    os.symlink((ROOT / "data").resolve(), where / "data")
    return where


def run_tests(copy_root: Path, tests: list[str], log: Path) -> int:
    """In a forked child: pytest on ``tests`` in ``copy_root``; returns its pid."""
    pid = os.fork()
    if pid:
        return pid
    code = 3
    try:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(fd, 1), os.dup2(fd, 2)
        os.chdir(copy_root)
        for name in [m for m in sys.modules if m.split(".")[0] in ("retina", "tests")]:
            del sys.modules[name]
        sys.path.insert(0, str(copy_root))
        import pytest

        code = pytest.main([*tests, "-x", "-q", "-m", "not slow", "-p", "no:cacheprovider",
                            "--no-header", "-W", "ignore"])
    finally:
        sys.stdout.flush(), sys.stderr.flush()
        os._exit(int(code))


def warm_imports() -> None:
    """What every test run imports, once, before forking (not retina, which is mutated)."""
    import lightning  # noqa: F401
    import matplotlib

    matplotlib.use("Agg")
    import hydra  # noqa: F401
    import numpy  # noqa: F401
    import pycocotools.cocoeval  # noqa: F401
    import pytest  # noqa: F401
    import torch  # noqa: F401
    import torchvision  # noqa: F401


def check_mapping(modules: list[str]) -> None:
    mapped = set(MODULES)
    problems = [f"{m}: not a file (renamed? update MODULES in tests/mutate.py)"
                for m in modules if not (ROOT / m).is_file()]
    for d in MATHS_DIRS:
        for p in sorted((ROOT / d).glob("*.py")):
            rel = p.relative_to(ROOT).as_posix()
            shim = "retina.compat import moved" in p.read_text()  # an old path, no code
            if p.name != "__init__.py" and rel not in mapped and not shim:
                problems.append(f"{rel}: no tests mapped (add it to MODULES in tests/mutate.py)")
    for m in modules:
        problems += [f"{m}: test file {t} missing" for t in MODULES.get(m, [])
                     if not (ROOT / t).is_file()]
    if problems:
        sys.exit("tests.mutate: " + "; ".join(problems))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.mutate", description=__doc__.split("\n")[0])
    ap.add_argument("modules", nargs="*", help="modules to mutate (default: all of MODULES)")
    ap.add_argument("--sample", type=int, default=40,
                    help="at most N mutants per module, drawn with --seed (0: every mutant)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2, help="mutants tested at once")
    ap.add_argument("--timeout", type=float, default=0,
                    help="seconds per mutant (default: 3 x the module's unmutated run + 20)")
    ap.add_argument("--out", type=Path, default=ROOT / "outputs" / "mutate")
    ap.add_argument("--list", action="store_true", help="count the mutants, run nothing")
    args = ap.parse_args(argv)
    modules = args.modules or list(MODULES)
    check_mapping(modules)

    plan: dict[str, tuple[str, list[Mutant]]] = {}
    for m in modules:
        source, mutants = mutants_of(m)
        if args.sample and len(mutants) > args.sample:
            mutants = sorted(random.Random(f"{args.seed}:{m}").sample(mutants, args.sample),
                             key=lambda x: (x.line, x.index, x.op))
        plan[m] = (source, mutants)
    if args.list:
        for m, (_, mutants) in plan.items():
            print(f"{len(mutants):5d}  {m}")
        print(f"{sum(len(v[1]) for v in plan.values()):5d}  total")
        return 0

    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    sys.dont_write_bytecode = True
    warm_imports()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="retina-mutate-"))
    slots = [make_copy(work / f"copy{k}") for k in range(max(1, args.jobs))]
    results: dict[str, list[dict]] = {}
    started = time.monotonic()
    try:
        for m, (source, mutants) in plan.items():
            results[m] = run_module(m, source, mutants, MODULES[m], slots, args, work)
            write_report(results, args.out, time.monotonic() - started)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_report(results, args.out, time.monotonic() - started)
    print(f"report: {args.out / 'report.md'}")
    return 0


def run_module(module: str, source: str, mutants: list[Mutant], tests: list[str],
               slots: list[Path], args, work: Path) -> list[dict]:
    # the unmutated module, as ast.unparse writes it, must pass
    (slots[0] / module).write_text(ast.unparse(ast.parse(source)))
    t0 = time.monotonic()
    log = work / "baseline.log"
    _, status = os.waitpid(run_tests(slots[0], tests, log), 0)
    base = time.monotonic() - t0
    (slots[0] / module).write_text(source)
    if os.waitstatus_to_exitcode(status) != 0:  # reported, its mutants not run
        print(f"{module}: the unmutated module fails its tests, no mutant run:\n"
              f"{log.read_text()[-3000:]}", flush=True)
        return [{"module": module, "verdict": "baseline failed", "log": log.read_text()[-3000:]}]
    timeout = args.timeout or 3 * base + 20
    print(f"{module}: {len(mutants)} mutants, tests {base:.1f} s unmutated", flush=True)

    out: list[dict] = []
    queue = list(mutants)
    running: dict[int, tuple[Mutant, Path, float]] = {}  # pid -> mutant, slot, start
    free = list(slots)
    while queue or running:
        while queue and free:
            mutant, slot = queue.pop(0), free.pop()
            (slot / module).write_text(mutated_source(source, mutant))
            pid = run_tests(slot, tests, work / f"{slot.name}.log")
            running[pid] = (mutant, slot, time.monotonic())
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            for p, (mutant, slot, t) in list(running.items()):
                if time.monotonic() - t > timeout:
                    os.kill(p, signal.SIGKILL)
            time.sleep(0.05)
            continue
        mutant, slot, t = running.pop(pid)
        code = os.waitstatus_to_exitcode(status)
        (slot / module).write_text(source)  # the slot's copy back to the original
        free.append(slot)
        verdict = ("survived" if code == 0 else "timeout" if code == -signal.SIGKILL
                   else "killed")
        out.append({**asdict(mutant), "verdict": verdict, "seconds": round(time.monotonic() - t, 1)})
        mark = {"survived": "S", "killed": ".", "timeout": "T"}[verdict]
        print(mark, end="", flush=True)
        if verdict == "survived":
            print(f"\n  survived: {module}:{mutant.line} {mutant.op} in `{mutant.code}`", flush=True)
    print(flush=True)
    return sorted(out, key=lambda r: (r["line"], r["index"], r["op"]))


def write_report(results: dict[str, list[dict]], out: Path, seconds: float) -> None:
    lines = ["# Mutation report", "", f"{seconds / 60:.1f} min wall. Killed includes timeouts.", "",
             "| module | killed | total | rate |", "|---|---|---|---|"]
    total = killed = 0
    for m, rows in results.items():
        if any(r["verdict"] == "baseline failed" for r in rows):
            lines.append(f"| {m} | - | - | its tests fail unmutated: not run |")
            continue
        k = sum(r["verdict"] != "survived" for r in rows)
        total, killed = total + len(rows), killed + k
        lines.append(f"| {m} | {k} | {len(rows)} | {k / max(len(rows), 1):.0%} |")
    lines.append(f"| all | {killed} | {total} | {killed / max(total, 1):.0%} |")
    lines += ["", "## Survivors", ""]
    for m, rows in results.items():
        lines += [f"- `{m}:{r['line']}` {r['op']} in `{r['code']}`" for r in rows
                  if r["verdict"] == "survived"]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    (out / "report.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    sys.exit(main())
