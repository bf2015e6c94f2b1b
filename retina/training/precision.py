"""``trainer.precision=auto``: bf16 mixed precision where the hardware computes bfloat16
natively, float32 elsewhere.

On a CPU, bf16 autocast is fast only with native bfloat16 dot products: AVX512-BF16
(``avx512_bf16`` in /proc/cpuinfo: Intel Cooper Lake and Sapphire Rapids, AMD Zen 4 and
later) or AMX (``amx_bf16``: Sapphire Rapids and later). Without them bfloat16 is emulated
and slower than float32, so ``auto`` trains in float32 there. On a GPU: bf16 where CUDA
says it is supported (Ampere and later), else float32. The choice is logged and written
into the run config (the checkpoint says which precision trained it).

Not the NEON recipe's default: whether bf16 keeps its accuracy takes three seeds of
training on a machine that has it (docs/benchmarks.md gives the command).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

log = logging.getLogger(__name__)

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
BF16 = "bf16-mixed"
FP32 = "32-true"


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The feature flags of the first CPU in ``cpuinfo`` (the text of /proc/cpuinfo; read
    when None; empty where there is no such file)."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text(errors="replace") if path.is_file() else ""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86 / ARM
            return set(value.split())
    return set()


def native_bf16_cpu(flags: set[str] | None = None) -> bool:
    """Whether the CPU has bfloat16 dot products (:data:`BF16_CPU_FLAGS`)."""
    flags = cpu_flags() if flags is None else flags
    return any(f in flags for f in BF16_CPU_FLAGS)


def resolve_precision(precision, accelerator: str | None, flags: set[str] | None = None,
                      cuda_bf16: bool | None = None) -> tuple[object, str]:
    """Lightning's precision for ``precision`` (``auto`` resolved, anything else as is) on
    ``accelerator`` (``cpu``, ``gpu``/``cuda``, ``auto``, ...), and why.

    Args:
        flags: the CPU's flags (default: /proc/cpuinfo's).
        cuda_bf16: whether the GPU has bf16 (default: ``torch.cuda.is_bf16_supported()``).
    """
    if str(precision) != "auto":
        return precision, "as given"
    if accelerator in (None, "auto"):
        accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    if accelerator in ("gpu", "cuda"):
        if cuda_bf16 is None:
            cuda_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return (BF16, "the GPU computes bf16") if cuda_bf16 else (
            FP32, "the GPU has no bf16")
    if accelerator != "cpu":
        return FP32, f"bf16 autocast is not chosen on {accelerator}"
    flags = cpu_flags() if flags is None else flags
    have = [f for f in BF16_CPU_FLAGS if f in flags]
    if have:
        return BF16, f"the CPU computes bf16 ({', '.join(have)})"
    return FP32, f"the CPU has neither {' nor '.join(BF16_CPU_FLAGS)}: bf16 would be emulated"


def apply_precision(trainer_cfg) -> None:
    """Resolve ``trainer.precision=auto`` in place in a trainer config, with a log line."""
    if str(trainer_cfg.get("precision")) != "auto":
        return
    value, why = resolve_precision("auto", trainer_cfg.get("accelerator"))
    trainer_cfg.precision = value
    log.info("trainer.precision=auto: %s (%s)", value, why)
