"""The ``retina`` command (also ``python -m retina``): ``retina COMMAND [key=value ...]``.

Each command is a module's ``main(argv)``, the one ``python -m MODULE`` runs
(:data:`retina.cli.COMMANDS`); this imports only the one asked for.
"""

from __future__ import annotations

import importlib
import sys

from retina import cli
from retina.schema import package_version

EXAMPLES = """\
examples:
  retina train                                   the NEON tree-crown default (data: `make data`)
  retina train data=coco data.train_ann=train.json data.train_images=images \\
      data.val_ann=val.json data.val_images=images trainer.max_epochs=12
  retina predict model=outputs/train/<date>/checkpoints/best.ckpt images=my_photos out=preds \\
      draw=true"""


def usage() -> str:
    width = max(map(len, cli.COMMANDS))
    lines = [f"  {name:{width}}  {cmd.summary}" for name, cmd in cli.COMMANDS.items()]
    return "\n".join([
        "usage: retina COMMAND [key=value ...]      retina COMMAND --help: its options",
        "",
        "Single-stage object detectors (RetinaNet, GFL): train, evaluate, export, predict.",
        "",
        "commands:", *lines, "", EXAMPLES,
    ])


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if not args:
        print(usage(), file=sys.stderr)
        return cli.USAGE_ERROR
    name, rest = args[0], args[1:]
    if cli.wants_help([name]):
        print(usage())
        return 0
    if name == "--version":
        print(f"retina-det {package_version()}")
        return 0
    if name not in cli.COMMANDS:
        cli.fail(f"unknown command {name!r}{cli.suggest(name, cli.COMMANDS)}; commands: "
                 f"{', '.join(cli.COMMANDS)}", "retina train --help")
    if cli.wants_help(rest):  # without importing the command's module
        return cli.print_usage(name)
    command = cli.COMMANDS[name]
    if command.config:  # a bad option is told before the (slow) import too
        cli.check_hydra_args(name, rest)
    elif command.options:
        cli.parse_command(name, rest)
    module = importlib.import_module(cli.COMMANDS[name].module)
    return module.main(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
