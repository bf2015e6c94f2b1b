"""A load test of ``retina serve``, on loopback only:

    retina bench serve model=FILE [requests=500] [concurrency=8] [image=FILE] [out=FILE.json]

Starts ``python -m retina serve model=FILE`` on a free port of 127.0.0.1, waits for
``/health`` (the time is reported), sends ``warmup`` requests, then ``requests`` POSTs of
one image from ``concurrency`` clients (threads, one keep-alive connection each), and stops
the server with SIGTERM. Reports throughput, latency percentiles, errors (any answer but
200, any connection error) and the server's resident memory (RSS): once loaded, before the
run (after the warm-up at the same concurrency, which fills the allocators' caches for
every batch size) and after it. Bounded: at most ``requests`` requests and ``time_limit``
seconds (what is not sent by then is counted as not sent); the server is always stopped.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from retina.training.config import ROOT

HOST = "127.0.0.1"
MAX_REQUESTS = 100_000


def free_port() -> int:
    """A port of 127.0.0.1 free now (the server binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def default_image() -> Path:
    tiles = sorted((ROOT / "data" / "neon_trees" / "val").glob("*.png"))
    if not tiles:
        raise FileNotFoundError("no NEON tile in data/neon_trees/val (make data): give image=FILE")
    return tiles[0]


def get(port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path)
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


def wait_healthy(port: int, server: subprocess.Popen, limit: float) -> float:
    """Seconds until ``/health`` answers 200; RuntimeError if the server ends or ``limit``
    passes first."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if server.poll() is not None:
            raise RuntimeError(f"the server ended with code {server.returncode} before /health")
        try:
            if get(port, "/health", timeout=1.0)[0] == 200:
                return time.monotonic() - start
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"no /health within {limit:.0f} s")


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children, MB."""
    import psutil

    proc = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 1e6


def start_server(model: str | Path, port: int, options: list[str],
                 env: dict[str, str] | None = None) -> subprocess.Popen:
    """``python -m retina serve model=... port=...``; its log goes to a temporary file
    (``server.log``, read by :func:`stop_server`), never to a pipe that could fill up."""
    log = tempfile.TemporaryFile("w+")
    server = subprocess.Popen(
        [sys.executable, "-m", "retina", "serve", f"model={model}", f"host={HOST}",
         f"port={port}", *options],
        stdout=log, stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})})
    server.log = log
    return server


def stop_server(server: subprocess.Popen, limit: float = 60.0) -> tuple[int, str]:
    """SIGTERM, then wait (kill after ``limit`` s): the exit code and the server's log."""
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
    try:
        server.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
    server.log.seek(0)
    log = server.log.read()
    server.log.close()
    return server.returncode, log


def fire(port: int, body: bytes, content_type: str, requests: int, concurrency: int,
         limit: float) -> dict[str, Any]:
    """``requests`` POSTs to /predict from ``concurrency`` threads, within ``limit`` seconds.

    Returns:
        ``latencies_s`` of the answers 200, ``errors`` {reason: count}, ``not_sent``,
        ``wall_s``.
    """
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    lock = threading.Lock()
    remaining = [requests]
    start = time.monotonic()
    deadline = start + limit
    headers = {"Content-Type": content_type}

    def client() -> None:
        conn = http.client.HTTPConnection(HOST, port, timeout=max(1.0, limit))
        while True:
            with lock:
                if remaining[0] == 0 or time.monotonic() > deadline:
                    break
                remaining[0] -= 1
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/predict", body=body, headers=headers)
                answer = conn.getresponse()
                answer.read()
                status = answer.status
            except (OSError, http.client.HTTPException) as err:
                status = type(err).__name__
                conn.close()
                conn = http.client.HTTPConnection(HOST, port, timeout=max(1.0, limit))
            elapsed = time.perf_counter() - t0
            with lock:
                if status == 200:
                    latencies.append(elapsed)
                else:
                    errors[str(status)] += 1
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"latencies_s": latencies, "errors": dict(errors), "not_sent": remaining[0],
            "wall_s": time.monotonic() - start}


def percentiles_ms(latencies: list[float]) -> dict[str, float]:
    if len(latencies) < 2:
        return {}
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")  # 99 cut points
    return {"p50": round(cuts[49] * 1000, 1), "p95": round(cuts[94] * 1000, 1),
            "p99": round(cuts[98] * 1000, 1), "mean": round(statistics.fmean(latencies) * 1000, 1),
            "max": round(max(latencies) * 1000, 1)}


def serve_bench(model: str | Path, requests: int = 500, concurrency: int = 8,
                image: str | Path | None = None, max_batch: int = 8, batch_timeout: float = 0.01,
                workers: int = 1, runtime: str = "auto", time_limit: float = 300.0,
                warmup: int = 32) -> dict[str, Any]:
    """The load test of the module docstring; the report as a dict."""
    if not 1 <= requests <= MAX_REQUESTS:
        raise ValueError(f"requests={requests}: expected 1..{MAX_REQUESTS}")
    if concurrency < 1:
        raise ValueError(f"concurrency={concurrency}: expected at least 1")
    path = Path(image) if image else default_image()
    body = path.read_bytes()
    content_type = "image/png" if path.suffix.lower() == ".png" else "application/octet-stream"
    port = free_port()
    options = [f"max_batch={max_batch}", f"batch_timeout={batch_timeout}", f"workers={workers}",
               f"runtime={runtime}"]
    server = start_server(model, port, options)
    try:
        start_s = wait_healthy(port, server, limit=min(time_limit, 120.0))
        loaded = rss_mb(server.pid)
        fire(port, body, content_type, warmup, concurrency, time_limit)
        before = rss_mb(server.pid)
        run = fire(port, body, content_type, requests, concurrency, time_limit)
        after = rss_mb(server.pid)
        status, info = get(port, "/info")
    finally:
        code, log = stop_server(server)
    ok = len(run["latencies_s"])
    batching = json.loads(info).get("batching", {}) if status == 200 else {}
    return {
        "model": str(model), "image": path.name, "requests": requests,
        "concurrency": concurrency, "ok": ok, "errors": run["errors"],
        "not_sent": run["not_sent"], "wall_s": round(run["wall_s"], 2),
        "throughput_rps": round(ok / run["wall_s"], 2) if run["wall_s"] else 0.0,
        "latency_ms": percentiles_ms(run["latencies_s"]),
        "rss_mb": {"loaded": round(loaded, 1), "before": round(before, 1),
                   "after": round(after, 1),
                   "growth": round(after - before, 1)},
        "start_to_health_s": round(start_s, 2),
        "server": {**batching, "runtime": runtime, "exit_code": code,
                   "log_tail": log.strip().splitlines()[-3:]},
    }


def print_serve(report: dict[str, Any]) -> None:
    lat = report["latency_ms"]
    print(f"{report['ok']}/{report['requests']} ok at concurrency {report['concurrency']} in "
          f"{report['wall_s']} s: {report['throughput_rps']} req/s; latency ms p50 "
          f"{lat.get('p50')} p95 {lat.get('p95')} p99 {lat.get('p99')}; errors "
          f"{report['errors'] or 0}; server RSS {report['rss_mb']['before']} -> "
          f"{report['rss_mb']['after']} MB; /health after {report['start_to_health_s']} s; "
          f"probe {report.get('matmul_peak_gflops')} GFLOP/s")
