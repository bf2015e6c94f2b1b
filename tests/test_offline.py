"""tests/offline.py: a test that would download something fails at once, in the test process
and in a subprocess, naming why; local connections still work."""

import socket
import subprocess
import sys
import urllib.request

import pytest

from tests.offline import is_local, missing_inputs


def test_a_download_fails_here_and_in_a_subprocess():
    with pytest.raises(OSError, match="the tests run offline: no connection to"):
        socket.create_connection(("192.0.2.1", 443), timeout=5)  # TEST-NET-1: never routed
    # urllib goes through the refusing proxy (the variables are this process's too)
    with pytest.raises(OSError, match="Connection refused|tests run offline"):
        urllib.request.urlopen("https://pypi.org/simple/", timeout=5)
    code = ("import urllib.request\n"
            "try:\n"
            "    urllib.request.urlopen('https://pypi.org/simple/', timeout=20)\n"
            "except OSError as err:\n"
            "    print('refused', err)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.stdout.startswith("refused"), run.stdout + run.stderr


def test_local_connections_go_through():
    server = socket.create_server(("127.0.0.1", 0))
    try:
        socket.create_connection(server.getsockname(), timeout=5).close()
    finally:
        server.close()
    assert is_local("localhost") and is_local("::1") and not is_local("pypi.org")


def test_this_run_has_every_offline_input():
    assert missing_inputs() == []
