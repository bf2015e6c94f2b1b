"""``python -m retina.convert torchvision|mmdet|to-torchvision FILE key=value...``: see
:mod:`retina.convert`. Options are parsed with OmegaConf, like ``retina.predict``."""

from __future__ import annotations

import logging
import sys

from omegaconf import OmegaConf

from retina.convert import mmdet, torchvision
from retina.convert.keys import ConversionError

USAGE = __doc__.split("\n\n")[0]
# command -> (function, its options besides the file)
COMMANDS = {
    "torchvision": (torchvision.convert, ("out", "variant", "bn_eps", "overrides")),
    "mmdet": (mmdet.convert, ("out", "model", "style", "mean", "std", "bgr_to_rgb",
                              "overrides")),
    "to-torchvision": (torchvision.to_torchvision, ("out",)),
}


def main(argv: list[str]) -> object:
    """Run one command; returns what its function returns."""
    if len(argv) < 2 or argv[0] not in COMMANDS or "=" in argv[1]:
        raise SystemExit(f"usage: {USAGE}")
    fn, allowed = COMMANDS[argv[0]]
    options = OmegaConf.to_container(OmegaConf.from_dotlist(argv[2:]))
    unknown = sorted(set(options) - set(allowed))
    if unknown or "out" not in options:
        raise SystemExit(f"{argv[0]} takes out=... and optionally "
                         f"{', '.join(a + '=' for a in allowed[1:]) or 'nothing else'}; got "
                         f"{', '.join(unknown) or 'no out='}")
    return fn(argv[1], options.pop("out"), **options)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        print(main(sys.argv[1:]))
    except (ConversionError, FileNotFoundError) as err:
        raise SystemExit(f"error: {err}") from None
