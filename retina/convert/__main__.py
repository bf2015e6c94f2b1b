"""``retina convert SOURCE PATH out=... [key=value ...]`` (``python -m retina.convert``): see
:mod:`retina.convert`; ``voc`` and ``yolo`` write COCO JSON (:mod:`retina.data.to_coco`)."""

from __future__ import annotations

import logging
import sys

from omegaconf import OmegaConf

from retina.cli import USAGE_ERROR, check_keys, fail, print_usage, split_positional, wants_help
from retina.convert import mmdet, torchvision
from retina.convert.keys import ConversionError
from retina.data import to_coco as annotations

# source -> (function, its options besides the file)
COMMANDS = {
    "torchvision": (torchvision.convert, ("out", "variant", "bn_eps", "overrides")),
    "mmdet": (mmdet.convert, ("out", "model", "style", "mean", "std", "bgr_to_rgb",
                              "overrides")),
    "to-torchvision": (torchvision.to_torchvision, ("out",)),
}
SOURCES = (*COMMANDS, *annotations.FORMATS)
EXAMPLE = "retina convert torchvision retinanet_resnet50_fpn_coco-eeacb38b.pth out=converted/tv"


def run(argv: list[str]) -> object:
    """Convert one model file; returns what the source's function returns."""
    (source, path), rest = split_positional(argv, 2, f"{'|'.join(COMMANDS)} FILE", EXAMPLE)
    if source not in COMMANDS:
        fail(f"unknown source {source!r}; one of {', '.join(SOURCES)}", EXAMPLE)
    fn, allowed = COMMANDS[source]
    check_keys(rest, list(allowed), EXAMPLE)
    options = OmegaConf.to_container(OmegaConf.from_dotlist(rest))
    if "out" not in options:
        fail(f"missing out=... ({source} takes out= and optionally "
             f"{', '.join(a + '=' for a in allowed[1:]) or 'nothing else'})", EXAMPLE)
    return fn(path, options.pop("out"), **options)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if wants_help(args):
        return print_usage("convert")
    if args and args[0] in annotations.FORMATS:
        return annotations.main(args)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        print(run(args))
    except (ConversionError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return USAGE_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
