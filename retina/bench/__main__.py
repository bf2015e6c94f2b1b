"""Benchmarks side by side with torchvision's RetinaNet, each in one process and one run
(``python -m retina.bench`` is the same):

    retina bench speed [sizes=[512,640]] [batch=2] [quick=true] [device=cuda]
                       [precision=bf16-mixed] [compile=true] [out=FILE]
    retina bench accuracy [minutes=10] [seeds=3 | seed=0] [models=[...]] [out=FILE]
    retina bench eval     # COCO evaluation time: faster-coco-eval vs pycocotools
    retina bench scene model=FILE [tiles=[400]] [overlap=0.25] [runtimes=[eager,auto]]
                       [tta=flip] [full_pass=true] [out=FILE]
    retina bench serve model=FILE [requests=500] [concurrency=8] [out=FILE]   # loopback
    retina bench probe    # the machine's matmul GFLOP/s, to write beside any timing
"""

from __future__ import annotations

import json
import os
import platform
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone

import torch
import torchvision

from retina.cli import fail, parse_options, print_usage, split_positional, suggest, wants_help


@dataclass
class SpeedOptions:
    """Speed and memory against torchvision's RetinaNet-R50-FPN."""

    sizes: list[int] = field(default_factory=lambda: [512, 640])
    batch: int = 2
    repeats: int = 5
    threads: int | None = None  # None: torch's default
    quick: bool = False  # 256 px, 2 repeats (about a minute)
    device: str = "cpu"  # or cuda, cuda:1
    precision: str = "fp32"  # or bf16-mixed: train steps and inference under bfloat16 autocast
    channels_last: bool = True  # add the channels-last rows
    compile: bool = False  # add the torch.compile rows (minutes of compiling on a CPU)
    memory: bool = True  # peak train memory, fresh processes
    out: str | None = None  # write the JSON report here


@dataclass
class AccuracyOptions:
    """NEON mAP after a fixed CPU budget, ours against torchvision."""

    minutes: float = 10.0  # training budget per model
    models: list[str] = field(default_factory=lambda: [  # retina.bench.accuracy.CONTENDERS
        "retinanet", "gfl", "torchvision_fair", "torchvision_default"])
    seed: int = 0  # one run per model with this seed
    seeds: int | None = None  # N runs per model, seeds 0..N-1 (instead of seed)
    out: str | None = None


@dataclass
class EvalOptions:
    """COCO evaluation time on synthetic detections, faster-coco-eval against pycocotools."""

    images: int = 500
    dets: int = 100  # detections per image
    classes: int = 80
    repeats: int = 3
    out: str | None = None


@dataclass
class SceneOptions:
    """A NEON model on the whole YELL crop scene: resized to the input vs sliced at native
    scale (retina.bench.scene)."""

    model: str | None = None  # checkpoint or export (retina.load); required
    tiles: list[int] = field(default_factory=lambda: [400])  # window sides
    overlap: float = 0.25
    batch: int = 4  # windows per network call
    draw: str | None = None  # write a PNG of both methods' detections here
    runtimes: list[str] | None = None  # eager, auto, onnx, openvino (null: eager and auto)
    tta: str | None = None  # flip: every method with test-time flip
    full_pass: bool = False  # the sliced runs add a full pass
    out: str | None = None


@dataclass
class ServeOptions:
    """A load test of retina serve on 127.0.0.1 (retina.bench.serve)."""

    model: str | None = None  # checkpoint or export (retina.load); required
    requests: int = 500
    concurrency: int = 8  # clients at once
    image: str | None = None  # the image every request sends (default: a NEON val tile)
    max_batch: int = 8  # the server's options
    batch_timeout: float = 0.01
    workers: int = 1
    runtime: str = "auto"
    time_limit: float = 300.0  # seconds for the requests; what is left is not sent
    out: str | None = None


@dataclass
class ProbeOptions:
    """Matmul GFLOP/s of this machine (2048^2 float32, best of 5)."""


OPTIONS = {"speed": SpeedOptions, "accuracy": AccuracyOptions, "eval": EvalOptions,
           "scene": SceneOptions, "serve": ServeOptions, "probe": ProbeOptions}


def machine() -> dict:
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
    }


def run(argv: list[str]) -> dict:
    """Run one benchmark; returns its report (also printed or written to ``out``)."""
    example = "retina bench speed quick=true out=speed.json"
    (command,), rest = split_positional(argv, 1, "|".join(OPTIONS), example)
    if command not in OPTIONS:
        fail(f"unknown benchmark {command!r}; one of {', '.join(OPTIONS)}", example)
    args = parse_options(OPTIONS[command], rest, example)
    if command == "probe":
        from retina.bench.speed import matmul_peak_gflops

        report = {"matmul_peak_gflops": round(matmul_peak_gflops(), 1), "machine": machine()}
        print(json.dumps(report))
        return report

    if command == "speed":
        from retina.bench.speed import check_device, print_speed, speed

        args.threads = args.threads or torch.get_num_threads()
        if args.quick:
            args.sizes, args.repeats = [256], 2
        try:
            check_device(args.device, args.precision)
        except ValueError as err:
            fail(str(err), "retina bench speed device=cuda precision=bf16-mixed")
        report = speed(args.sizes, args.batch, args.repeats, args.threads, args.memory,
                       args.device, args.precision, args.channels_last, args.compile)
        report["config"] = {k: getattr(args, k) for k in (
            "sizes", "batch", "repeats", "threads", "quick", "device", "precision",
            "channels_last", "compile", "memory")}
    elif command == "eval":
        from retina.bench.evaluation import eval_speed, print_eval

        report = {"eval": eval_speed(args.images, args.dets, args.classes, args.repeats)}
    elif command == "scene":
        from retina.bench.scene import scene_bench

        if not args.model:
            fail("scene needs model=FILE (a checkpoint or an export)",
                 "retina bench scene model=outputs/train/<date>/checkpoints/best.ckpt")
        from retina.options import RUNTIMES

        for runtime in args.runtimes or []:
            if runtime not in RUNTIMES:
                fail(f"runtimes: {runtime!r} is not one of {', '.join(RUNTIMES)}"
                     f"{suggest(str(runtime), RUNTIMES)}", "retina bench scene model=FILE "
                     "runtimes=[eager,onnx]")
        if args.tta not in (None, "flip"):
            fail(f"tta={args.tta}: expected flip", "retina bench scene model=FILE tta=flip")
        report = scene_bench(args.model, args.tiles, args.overlap, args.batch, draw=args.draw,
                             runtimes=args.runtimes, tta=args.tta, full_pass=args.full_pass)
    elif command == "serve":
        from retina.bench.serve import serve_bench
        from retina.bench.speed import matmul_peak_gflops

        serve_example = "retina bench serve model=best.ckpt requests=500 concurrency=8"
        if not args.model:
            fail("serve needs model=FILE (a checkpoint or an export)", serve_example)
        try:
            report = serve_bench(args.model, args.requests, args.concurrency, args.image,
                                 args.max_batch, args.batch_timeout, args.workers, args.runtime,
                                 args.time_limit)
        except (ValueError, FileNotFoundError, RuntimeError) as err:
            fail(str(err), serve_example)
        report["matmul_peak_gflops"] = round(matmul_peak_gflops(), 1)  # after, not beside it
    else:
        from retina.bench.accuracy import accuracy

        if args.seeds is not None and args.seeds < 1:
            fail(f"seeds must be at least 1, got {args.seeds}", example)
        seeds = list(range(args.seeds)) if args.seeds is not None else [args.seed]
        report = accuracy(args.minutes, args.models, seeds)
    report["machine"] = machine()
    report["command"] = "retina bench " + " ".join(argv)
    if command == "speed":
        print_speed(report)
    if command == "eval":
        print_eval(report)
    if command == "serve":
        from retina.bench.serve import print_serve

        print_serve(report)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
        print(f"\nwrote {args.out}")
    return report


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if wants_help(args):
        return print_usage("bench")
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
