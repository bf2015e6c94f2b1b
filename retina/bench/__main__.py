"""Benchmarks side by side with torchvision's RetinaNet, each in one process and one run.

    python -m retina.bench speed [--sizes 512 640] [--batch 2] [--quick] [--out FILE]
    python -m retina.bench accuracy [--minutes 10] [--seeds 3 | --seed 0] [--models ...] [--out FILE]
    python -m retina.bench eval     # COCO evaluation: faster-coco-eval vs pycocotools
    python -m retina.bench scene --model FILE [--tiles 400] [--overlap 0.25] [--out FILE]
    python -m retina.bench probe    # the machine's matmul GFLOP/s, to write beside any timing
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from datetime import datetime, timezone

import torch
import torchvision


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


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="python -m retina.bench", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sp = sub.add_parser("speed", help="speed and memory against torchvision's RetinaNet-R50-FPN")
    sp.add_argument("--sizes", type=int, nargs="+", default=[512, 640])
    sp.add_argument("--batch", type=int, default=2)
    sp.add_argument("--repeats", type=int, default=5)
    sp.add_argument("--threads", type=int, default=torch.get_num_threads())
    sp.add_argument("--quick", action="store_true", help="256 px, 2 repeats (about a minute)")
    sp.add_argument("--out", help="write the JSON report here")
    ac = sub.add_parser("accuracy", help="NEON mAP after a fixed CPU budget, ours vs torchvision")
    ac.add_argument("--minutes", type=float, default=10.0, help="training budget per model")
    ac.add_argument("--models", nargs="+", help="contenders (retina.bench.accuracy.CONTENDERS)",
                    default=["retinanet", "gfl", "torchvision_fair", "torchvision_default"])
    seeds = ac.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, default=0, help="one run per model with this seed")
    seeds.add_argument("--seeds", type=int, help="N runs per model, seeds 0..N-1")
    ac.add_argument("--out", help="write the JSON report here")
    ev = sub.add_parser("eval", help="COCO evaluation time, faster-coco-eval vs pycocotools")
    ev.add_argument("--images", type=int, default=500)
    ev.add_argument("--dets", type=int, default=100, help="detections per image")
    ev.add_argument("--classes", type=int, default=80)
    ev.add_argument("--repeats", type=int, default=3)
    ev.add_argument("--out", help="write the JSON report here")
    sc = sub.add_parser("scene", help="a NEON model on the whole YELL crop scene: resized "
                        "to the input vs sliced at native scale (retina.bench.scene)")
    sc.add_argument("--model", required=True, help="checkpoint or export (retina.load)")
    sc.add_argument("--tiles", type=int, nargs="+", default=[400], help="window sides")
    sc.add_argument("--overlap", type=float, default=0.25)
    sc.add_argument("--batch", type=int, default=4, help="windows per network call")
    sc.add_argument("--draw", help="write a PNG of both methods' detections here")
    sc.add_argument("--out", help="write the JSON report here")
    sub.add_parser("probe", help="matmul GFLOP/s of this machine (2048^2 float32, best of 5)")
    args = parser.parse_args(argv)
    if args.command == "probe":
        from retina.bench.speed import matmul_peak_gflops

        report = {"matmul_peak_gflops": round(matmul_peak_gflops(), 1), "machine": machine()}
        print(json.dumps(report))
        return report

    if args.command == "speed":
        from retina.bench.speed import print_speed, speed

        if args.quick:
            args.sizes, args.repeats = [256], 2
        report = speed(args.sizes, args.batch, args.repeats, args.threads)
        report["config"] = {"sizes": args.sizes, "batch": args.batch, "repeats": args.repeats,
                            "threads": args.threads, "quick": args.quick}
    elif args.command == "eval":
        from retina.bench.evaluation import eval_speed, print_eval

        report = {"eval": eval_speed(args.images, args.dets, args.classes, args.repeats)}
    elif args.command == "scene":
        from retina.bench.scene import scene_bench

        report = scene_bench(args.model, args.tiles, args.overlap, args.batch, draw=args.draw)
    else:
        from retina.bench.accuracy import accuracy

        if args.seeds is not None and args.seeds < 1:
            parser.error(f"--seeds must be at least 1, got {args.seeds}")
        seeds = list(range(args.seeds)) if args.seeds is not None else [args.seed]
        report = accuracy(args.minutes, args.models, seeds)
    report["machine"] = machine()
    report["command"] = "python -m retina.bench " + " ".join(argv)
    if args.command == "speed":
        print_speed(report)
    if args.command == "eval":
        print_eval(report)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
        print(f"\nwrote {args.out}")
    return report


if __name__ == "__main__":
    main()
