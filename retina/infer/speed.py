"""Inference time per tile of every runtime, next to eager PyTorch.

    retina export-speed model=FILE [tile=400] [repeats=20] [threads=N]   (python -m retina.infer.speed)

One process, one input (a uint8 tile, ``batch`` copies of it per call), the whole path each
time (resize, network, postprocess, mapping back), same thread count for every runtime;
repeats are interleaved (eager, torchscript, onnx, eager, ...) after warm-up, so machine
noise hits all runtimes alike. Reports the median and minimum per tile and runtime and the
ratio to eager. Rows: eager PyTorch, TorchScript, ONNX Runtime (the exported file),
``runtime=auto`` (the cached graph ``retina predict`` runs by default: no resize inside),
OpenVINO when installed, and with ``calib`` the INT8 exports (ONNX Runtime; OpenVINO).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from retina.cli import key_value_command
from retina.data.coco import read_rgb
from retina.export.calibration import Calibration
from retina.export.formats import export
from retina.infer.predictor import from_checkpoint
from retina.infer.runtimes import installed, load
from retina.options import ExportSpeedOptions


def interleaved_times(
    runners: dict[str, Callable[[], object]], repeats: int, warmup: int
) -> dict[str, list[float]]:
    """Seconds per call of each runner, calls interleaved across runners."""
    for _ in range(warmup):
        for fn in runners.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeats):
        for name, fn in runners.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def load_tile(tile: int, image: str | Path | None) -> Tensor:
    """(3, tile, tile) uint8: the top-left crop of ``image``, or smooth random pixels."""
    if image is not None:
        return read_rgb(image)[:, :tile, :tile].contiguous()
    low = torch.rand(1, 3, tile // 16, tile // 16, generator=torch.Generator().manual_seed(0))
    return (torch.nn.functional.interpolate(low, (tile, tile), mode="bilinear")[0] * 255).byte()


def predictors(ckpt_path: str | Path, folder: Path, threads: int,
               calibration: Calibration | None) -> dict[str, Callable]:
    """Every runtime's predictor of ``ckpt_path`` (exports written into ``folder``)."""
    eager = from_checkpoint(ckpt_path)
    out = {"eager pytorch": eager,
           "torchscript": load(export(eager, "torchscript", folder / "model.pt")),
           "onnx runtime": load(export(eager, "onnx", folder / "model.onnx"), threads=threads),
           "runtime=auto (onnx)": load(ckpt_path, runtime="auto", threads=threads)}
    if installed("openvino"):
        out["openvino"] = load(export(eager, "openvino", folder / "model.xml"), threads=threads)
    if calibration is not None:
        out["onnx runtime int8"] = load(export(
            eager, "onnx", folder / "model_int8.onnx", quantize="int8",
            calibration=calibration), threads=threads)
        if installed("openvino"):
            out["openvino int8"] = load(export(
                eager, "openvino", folder / "model_int8.xml", quantize="int8",
                calibration=calibration), threads=threads)
    return out


def speed(
    ckpt_path: str | Path, tile: int = 400, image: str | Path | None = None, repeats: int = 20,
    warmup: int = 3, threads: int | None = None, out_dir: str | Path | None = None,
    calibration: Calibration | None = None, batch: int = 1,
) -> list[dict]:
    """Median / min milliseconds per tile of each runtime (module docstring).

    Args:
        ckpt_path: ``retina.train`` checkpoint.
        tile: side of the square input tile in pixels.
        image: take the tile from this image (default: random pixels).
        repeats: timed calls per runtime.
        warmup: untimed calls per runtime first.
        threads: intra-op threads of torch and the runtimes while timing (default: torch's
            current); torch's setting is restored afterwards.
        out_dir: where to write the exports (default: a temporary folder).
        calibration: add the INT8 rows, calibrated on these images.
        batch: tiles per call (the times are per tile).

    Returns:
        rows ``runtime``, ``median_ms``, ``min_ms`` (per tile), ``ratio`` (median / eager
        median), ``tile``, ``threads``, ``repeats``, ``batch``.
    """
    before = torch.get_num_threads()
    threads = threads or before
    torch.set_num_threads(threads)
    try:  # the caller's thread count comes back, whatever happens
        images = [load_tile(tile, image)] * batch
        with tempfile.TemporaryDirectory() as tmp:
            runners = {name: (lambda p=p: p(images)) for name, p in predictors(
                ckpt_path, Path(out_dir or tmp), threads, calibration).items()}
            times = interleaved_times(runners, repeats, warmup)
    finally:
        torch.set_num_threads(before)
    base = statistics.median(times["eager pytorch"])
    return [{"runtime": name, "median_ms": 1e3 * statistics.median(t) / batch,
             "min_ms": 1e3 * min(t) / batch, "ratio": statistics.median(t) / base, "tile": tile,
             "threads": threads, "repeats": repeats, "batch": batch}
            for name, t in times.items()]


def format_table(rows: list[dict]) -> str:
    r0 = rows[0]
    title = (f"{r0['tile']}x{r0['tile']} uint8 tile, batch {r0.get('batch', 1)}, "
             f"{r0['threads']} threads, {r0['repeats']} interleaved repeats (ms per tile)")
    lines = [title, f"{'runtime':20} {'median ms':>10} {'min ms':>8} {'vs eager':>9}"]
    lines += [f"{r['runtime']:20} {r['median_ms']:10.1f} {r['min_ms']:8.1f} {r['ratio']:8.2f}x"
              for r in rows]
    return "\n".join(lines)


def task(opts: ExportSpeedOptions) -> None:
    calibration = Calibration.from_folder(opts.calib, opts.calib_images) if opts.calib else None
    rows = speed(opts.model, opts.tile, opts.image, opts.repeats, opts.warmup, opts.threads,
                 opts.out, calibration, opts.batch)
    print(format_table(rows))


main = key_value_command("export-speed", task)

if __name__ == "__main__":
    sys.exit(main())
