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
import os
import sys
from typing import TYPE_CHECKING

from retina.cli import COMMANDS, USAGE_ERROR, fail, key_value_command, torch_device
from retina.options import ServeOptions

if TYPE_CHECKING:
    import socket

    from starlette.applications import Starlette

API_KEY_ENV = "RETINA_API_KEY"
# the `serve` extra: distribution -> the import names it may have
SERVE_MODULES = {"starlette": ("starlette",), "uvicorn": ("uvicorn",),
                 "python-multipart": ("python_multipart", "multipart")}


def check(cfg: ServeOptions, api_key: str | None) -> None:
    """What the options' own rules (retina.options) cannot see: the serve extra installed, and
    a key for another host than loopback; one line (exit 2) before anything heavy is imported."""
    example = COMMANDS["serve"].example
    missing = [name for name, modules in SERVE_MODULES.items()
               if not any(importlib.util.find_spec(m) for m in modules)]
    if missing:
        fail(f"retina serve needs {', '.join(missing)}: pip install 'retina-det[serve]'",
             example)
    from retina.infer.serving.server import is_loopback

    if not is_loopback(cfg.host) and not api_key:
        fail(f"host={cfg.host} serves other machines: set api_key=KEY (or ${API_KEY_ENV}), or "
             "keep host=127.0.0.1", f"{example} host={cfg.host} api_key=$(openssl rand -hex 16)")


def prepare(cfg: ServeOptions, api_key: str | None) -> tuple[Starlette, socket.socket, str]:
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
    served = load_served(cfg.model, cfg.runtime, torch_device(cfg.device))
    batcher = Batcher(served.predict, served.predict_large, cfg.max_batch, cfg.batch_timeout,
                      cfg.workers)
    app = make_app(served, batcher, Limits(cfg.max_bytes, cfg.max_pixels, api_key))
    sock = bind(cfg.host, cfg.port)
    classes = len(served.class_names)
    banner = (f"(model {served.path.name}, runtime {served.runtime}, {classes} "
              f"class{'es' if classes > 1 else ''}{', API key required' if api_key else ''})")
    return app, sock, banner


def serve(cfg: ServeOptions) -> int:
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


def task(cfg: ServeOptions) -> None:
    if serve(cfg):
        raise SystemExit(USAGE_ERROR)


main = key_value_command("serve", task)


if __name__ == "__main__":
    sys.exit(main())
