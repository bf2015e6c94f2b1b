"""The tests run offline: what they read from outside the checkout is what ``make data`` puts
in place, checked once at the start of a run (``missing_inputs``), and any connection to
another host fails (``go_offline``) instead of downloading: in the test process through
``socket``, in its subprocesses through a proxy that refuses (pip, urllib and requests read
the proxy variables). Connections to this machine (DDP, Jupyter kernels) go through.

The one test that needs the package index (the wheel installed into a fresh venv,
``make test-long``) gives its pip the environment without ``OFFLINE_ENV``.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

import torch

from retina.data.neon import is_prepared
from retina.model.offline_weights import FILE as MOBILENET_FILE
from retina.training.config import ROOT
from tests.fetch_fixtures import LABELME, SAHI, fixture_dir

# subprocesses: any HTTP(S) download goes to a local port that refuses; local hosts direct
OFFLINE_ENV = {name: "http://127.0.0.1:9" for name in
               ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")}
OFFLINE_ENV |= {"no_proxy": "localhost,127.0.0.1,::1", "NO_PROXY": "localhost,127.0.0.1,::1"}


def missing_inputs() -> list[str]:
    """What ``make data`` puts in place and is not there (empty: all is)."""
    needed = {
        "the NEON tiles": (ROOT / "data" / "neon_trees", is_prepared),
        "the MobileNetV2 ImageNet weights": (
            Path(torch.hub.get_dir()) / "checkpoints" / MOBILENET_FILE, Path.is_file),
        **{f"the {spec[0]} fixture": (fixture_dir(spec), Path.is_dir) for spec in (LABELME, SAHI)},
    }
    return [f"{what} ({path})" for what, (path, present) in needed.items() if not present(path)]


def is_local(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:  # a host name: resolving it would be the network already
        return False


def _refuse_remote(connect):
    def guarded(self, address, *args):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not is_local(str(address[0])):
            raise OSError(f"the tests run offline: no connection to {address[0]} (`make data` "
                          "puts what they read in place)")
        return connect(self, address, *args)

    guarded.offline = True
    return guarded


def go_offline() -> None:
    """This process and the subprocesses it starts from now on cannot reach other hosts."""
    os.environ.update(OFFLINE_ENV)
    for name in ("connect", "connect_ex"):
        method = getattr(socket.socket, name)
        if not getattr(method, "offline", False):
            setattr(socket.socket, name, _refuse_remote(method))
