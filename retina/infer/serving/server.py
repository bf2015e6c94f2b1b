"""Run the application on a socket with uvicorn; SIGTERM and Ctrl+C end it gracefully.

The socket is bound here, before uvicorn starts, so that ``port=0`` (any free port) works
and the line printed says the real address. On SIGTERM or SIGINT uvicorn stops accepting
connections, answers the requests in flight (up to ``grace`` seconds), then the
application's lifespan stops the inference threads; the process then ends by the signal,
as a process killed by it would. Large freed blocks go back to the OS
(:func:`return_freed_tensors_to_the_os`), so the RSS follows the batch in hand.
"""

from __future__ import annotations

import ctypes
import ipaddress
import socket
import sys

import uvicorn
from starlette.applications import Starlette

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
MMAP_THRESHOLD = 4 << 20  # bytes


def return_freed_tensors_to_the_os() -> bool:
    """Make glibc serve every allocation of 4 MiB or more (a batch's activations) with its
    own mmap, given back to the OS when freed.

    By default glibc raises that threshold as large blocks are freed, and later ones come
    from the heap, which keeps its high-water mark: with the NEON GFL model (448 px) and
    batches of 1 to 8 images, RSS grew about 300 MB over the first batches after warm-up
    and stayed there; with the threshold fixed it grew about 40 MB, at the same speed
    (2026-12-07, loaded machine). False where there is no glibc (nothing changes).
    """
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, AttributeError):
        return False


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (``port=0``: a free port); OSError names both."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    sock.listen(2048)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class Server(uvicorn.Server):
    """uvicorn's server that prints one line once the application has started."""

    def __init__(self, config: uvicorn.Config, banner: str) -> None:
        super().__init__(config)
        self.banner = banner

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and sockets:
            print(f"retina serve: {url_of(sockets[0])} {self.banner}".rstrip(), file=sys.stderr,
                  flush=True)


def run(app: Starlette, sock: socket.socket, grace: float = 30.0, log_level: str = "warning",
        banner: str = "") -> None:
    """Serve ``app`` on ``sock`` until SIGTERM / SIGINT; prints ``retina serve: URL banner``
    (one line, to stderr) once it listens."""
    config = uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="on",
                            timeout_graceful_shutdown=grace)
    Server(config, banner).run(sockets=[sock])
