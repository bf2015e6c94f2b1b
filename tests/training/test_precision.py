"""trainer.precision=auto (retina.training.precision): the choice, with the CPU's flags and
the GPU's answer faked."""

import logging

import pytest
from omegaconf import OmegaConf

from retina.training.precision import apply_precision, cpu_flags, resolve_precision

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
flags\t\t: fpu vme sse2 avx avx2 {extra}
bugs\t\t: sysret_ss_attrs

processor\t: 1
flags\t\t: fpu
"""


def test_flags_come_from_the_first_cpu():
    assert cpu_flags(CPUINFO.format(extra="avx512_bf16")) == {
        "fpu", "vme", "sse2", "avx", "avx2", "avx512_bf16"}
    assert cpu_flags("Features\t: fp asimd bf16\n") == {"fp", "asimd", "bf16"}  # ARM
    assert cpu_flags("") == set()


@pytest.mark.parametrize("extra, expected", [
    ("avx512_bf16", "bf16-mixed"),  # Cooper Lake, Zen 4
    ("amx_bf16 amx_tile", "bf16-mixed"),  # Sapphire Rapids
    ("avx512f avx512_vnni", "32-true"),  # AVX-512 without bf16: emulated, slower
    ("", "32-true"),
])
def test_auto_on_a_cpu_takes_bf16_only_where_it_is_native(extra, expected):
    value, why = resolve_precision("auto", "cpu", flags=cpu_flags(CPUINFO.format(extra=extra)))
    assert value == expected and why


@pytest.mark.parametrize("cuda_bf16, expected", [(True, "bf16-mixed"), (False, "32-true")])
def test_auto_on_a_gpu_follows_cuda(cuda_bf16, expected):
    assert resolve_precision("auto", "gpu", cuda_bf16=cuda_bf16)[0] == expected
    assert resolve_precision("auto", "cuda", cuda_bf16=cuda_bf16)[0] == expected


def test_other_values_and_accelerators_are_left_alone():
    assert resolve_precision("16-mixed", "gpu") == ("16-mixed", "as given")
    assert resolve_precision(32, "cpu") == (32, "as given")
    assert resolve_precision("auto", "mps")[0] == "32-true"


def test_auto_is_written_into_the_trainer_config(caplog, monkeypatch):
    monkeypatch.setattr("retina.training.precision.cpu_flags",
                        lambda: cpu_flags(CPUINFO.format(extra="amx_bf16")))
    cfg = OmegaConf.create({"accelerator": "cpu", "precision": "auto"})
    with caplog.at_level(logging.INFO, logger="retina.training.precision"):
        apply_precision(cfg)
    assert cfg.precision == "bf16-mixed"
    assert "trainer.precision=auto: bf16-mixed (the CPU computes bf16 (amx_bf16))" in caplog.text
    kept = OmegaConf.create({"accelerator": "cpu", "precision": "32-true"})
    apply_precision(kept)
    assert kept.precision == "32-true"
