"""Inference time per tile: ONNX Runtime and TorchScript next to eager PyTorch.

    retina export-speed model=FILE [tile=400] [repeats=20] [threads=N]   (python -m retina.infer.speed)

One process, one input (a uint8 tile, batch 1), the whole path each time (resize,
network, postprocess, mapping back), same thread count for every runtime; repeats are
interleaved (eager, torchscript, onnx, eager, ...) after warm-up, so machine noise hits
all runtimes alike. Reports the median and minimum per runtime and the ratio to eager.
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
from retina.export.formats import export
from retina.infer.predictor import from_checkpoint
from retina.infer.runtimes import load
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


def speed(
    ckpt_path: str | Path, tile: int = 400, image: str | Path | None = None, repeats: int = 20,
    warmup: int = 3, threads: int | None = None, out_dir: str | Path | None = None,
) -> list[dict]:
    """Median / min milliseconds per tile for eager PyTorch, TorchScript and ONNX Runtime.

    Args:
        ckpt_path: ``retina.train`` checkpoint.
        tile: side of the square input tile in pixels.
        image: take the tile from this image (default: random pixels).
        repeats: timed calls per runtime.
        warmup: untimed calls per runtime first.
        threads: intra-op threads of torch and ONNX Runtime while timing (default: torch's
            current); torch's setting is restored afterwards.
        out_dir: where to write the exports (default: a temporary folder).

    Returns:
        rows ``runtime``, ``median_ms``, ``min_ms``, ``ratio`` (median / eager median).
    """
    before = torch.get_num_threads()
    threads = threads or before
    torch.set_num_threads(threads)
    try:  # the caller's thread count comes back, whatever happens
        eager = from_checkpoint(ckpt_path)
        images = [load_tile(tile, image)]
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(out_dir or tmp)
            script = load(export(eager, "torchscript", folder / "model.pt"))
            onnx = load(export(eager, "onnx", folder / "model.onnx"), threads=threads)
            runners = {"eager pytorch": lambda: eager(images),
                       "torchscript": lambda: script(images), "onnx runtime": lambda: onnx(images)}
            times = interleaved_times(runners, repeats, warmup)
    finally:
        torch.set_num_threads(before)
    base = statistics.median(times["eager pytorch"])
    return [{"runtime": name, "median_ms": 1e3 * statistics.median(t), "min_ms": 1e3 * min(t),
             "ratio": statistics.median(t) / base, "tile": tile, "threads": threads,
             "repeats": repeats} for name, t in times.items()]


def format_table(rows: list[dict]) -> str:
    r0 = rows[0]
    title = (f"{r0['tile']}x{r0['tile']} uint8 tile, batch 1, {r0['threads']} threads, "
             f"{r0['repeats']} interleaved repeats")
    lines = [title, f"{'runtime':16} {'median ms':>10} {'min ms':>8} {'vs eager':>9}"]
    lines += [f"{r['runtime']:16} {r['median_ms']:10.1f} {r['min_ms']:8.1f} {r['ratio']:8.2f}x"
              for r in rows]
    return "\n".join(lines)


def task(opts: ExportSpeedOptions) -> None:
    rows = speed(opts.model, opts.tile, opts.image, opts.repeats, opts.warmup, opts.threads,
                 opts.out)
    print(format_table(rows))


main = key_value_command("export-speed", task)

if __name__ == "__main__":
    sys.exit(main())
