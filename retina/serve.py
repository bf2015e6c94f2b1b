"""Serve a model over HTTP: ``retina serve model=FILE [port=8000] [key=value ...]``
(``python -m retina.serve``).

``model`` is any file ``retina.load`` reads (checkpoint, safetensors, TorchScript, ONNX).
The model is loaded and run once before the socket is bound, so a file that does not load
is one line (exit 2) and no port is ever taken. Then ``http://HOST:PORT`` serves ``/``
(a page to try the model), ``/health``, ``/info`` and ``POST /predict``, requests batched
across clients; SIGTERM answers the requests in flight, then ends. See
``retina.infer.serving`` and docs/serve.md.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import MISSING

from retina.cli import (
    COMMANDS,
    USAGE_ERROR,
    fail,
    parse_options,
    print_usage,
    suggest,
    wants_help,
)

if TYPE_CHECKING:
    import socket

    from starlette.applications import Starlette

API_KEY_ENV = "RETINA_API_KEY"
# the `serve` extra: distribution -> the import names it may have
SERVE_MODULES = {"starlette": ("starlette",), "uvicorn": ("uvicorn",),
                 "python-multipart": ("python_multipart", "multipart")}


@dataclass
class ServeConfig:
    """Options of ``retina serve`` (all ``key=value`` on the command line)."""

    model: str = MISSING  # checkpoint or export file
    host: str = "127.0.0.1"  # another address than loopback needs an API key
    port: int = 8000  # 0: any free port (the URL is printed)
    runtime: str = "auto"  # auto | eager (checkpoints, safetensors); exports run as they load
    max_batch: int = 8  # images per network call, across clients
    batch_timeout: float = 0.01  # seconds the first image of a batch waits for others
    workers: int = 1  # inference threads sharing the model
    max_bytes: int = 50_000_000  # upload limit
    max_pixels: int = 50_000_000  # decoded image limit (width x height)
    api_key: str | None = None  # default: $RETINA_API_KEY; set: /predict and /info need it
    device: str = "cpu"  # eager formats only
    grace: float = 30.0  # seconds SIGTERM waits for the requests in flight


def check(cfg: ServeConfig, api_key: str | None) -> None:
    """Option values, or one line naming the key (exit 2), before anything heavy is imported."""
    example = COMMANDS["serve"].example
    missing = [name for name, modules in SERVE_MODULES.items()
               if not any(importlib.util.find_spec(m) for m in modules)]
    if missing:
        fail(f"retina serve needs {', '.join(missing)}: pip install 'retina-det[serve]'",
             example)
    model = Path(cfg.model)
    if not model.is_file():
        near = [p.name for p in model.parent.iterdir()] if model.parent.is_dir() else []
        fail(f"model={cfg.model}: no such file{suggest(model.name, near)}", example)
    positive = {"max_batch": cfg.max_batch, "workers": cfg.workers, "max_bytes": cfg.max_bytes,
                "max_pixels": cfg.max_pixels}
    for key, value in positive.items():
        if value < 1:
            fail(f"{key}={value}: expected at least 1", example)
    for key, value in {"batch_timeout": cfg.batch_timeout, "grace": cfg.grace}.items():
        if value < 0:
            fail(f"{key}={value}: expected seconds >= 0", example)
    if not 0 <= cfg.port <= 65535:
        fail(f"port={cfg.port}: expected 0..65535 (0: any free port)", example)
    from retina.infer.serving.server import is_loopback

    if not is_loopback(cfg.host) and not api_key:
        fail(f"host={cfg.host} serves other machines: set api_key=KEY (or ${API_KEY_ENV}), or "
             "keep host=127.0.0.1", f"{example} host={cfg.host} api_key=$(openssl rand -hex 16)")


def prepare(cfg: ServeConfig, api_key: str | None) -> tuple[Starlette, socket.socket, str]:
    """Load the model, build the application and bind the socket: ``(app, socket, banner)``.

    Raises:
        FileNotFoundError, ValueError: the model does not load; OSError: the address is taken.
    """
    import torch

    from retina.infer.serving.app import Limits, make_app
    from retina.infer.serving.batcher import Batcher
    from retina.infer.serving.model import load_served
    from retina.infer.serving.server import bind, return_freed_tensors_to_the_os

    return_freed_tensors_to_the_os()  # before the model's first allocations
    if cfg.workers > 1:  # the threads share the cores
        torch.set_num_threads(max(1, torch.get_num_threads() // cfg.workers))
    served = load_served(cfg.model, cfg.runtime, cfg.device)
    batcher = Batcher(served.predict, served.predict_large, cfg.max_batch, cfg.batch_timeout,
                      cfg.workers)
    app = make_app(served, batcher, Limits(cfg.max_bytes, cfg.max_pixels, api_key))
    sock = bind(cfg.host, cfg.port)
    classes = len(served.class_names)
    banner = (f"(model {served.path.name}, runtime {served.runtime}, {classes} "
              f"class{'es' if classes > 1 else ''}{', API key required' if api_key else ''})")
    return app, sock, banner


def serve(cfg: ServeConfig) -> int:
    """Serve until SIGTERM / Ctrl+C; 2 (one line on stderr) if it cannot start."""
    api_key = cfg.api_key or os.environ.get(API_KEY_ENV) or None
    check(cfg, api_key)
    try:
        app, sock, banner = prepare(cfg, api_key)
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return USAGE_ERROR
    from retina.infer.serving.server import run

    try:
        run(app, sock, cfg.grace, banner=banner)
    finally:
        sock.close()
    return 0


def parse(argv: list[str]) -> ServeConfig:
    return parse_options(ServeConfig, argv, COMMANDS["serve"].example)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if wants_help(args):
        return print_usage("serve")
    cfg = parse(args)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    return serve(cfg)


if __name__ == "__main__":
    sys.exit(main())
