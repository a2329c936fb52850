"""Inference precision is decided from the machine at run time: bf16 only where the CPU has bf16 units."""

from __future__ import annotations

import pytest
import torch

from loramerge.cpu import cpu_has_bf16
from loramerge.precision import resolve


@pytest.fixture
def cpus(tmp_path):
    """/proc/cpuinfo of a CPU with AVX512-BF16 and AMX, and of an AVX2-only one."""
    (tmp_path / "with").write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n")
    (tmp_path / "without").write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f\n")
    return tmp_path / "with", tmp_path / "without"


def test_bf16_support_is_read_from_the_cpu_flags(cpus):
    with_units, without = cpus
    assert cpu_has_bf16(with_units) and not cpu_has_bf16(without)


def test_auto_chooses_bf16_only_where_the_cpu_has_the_units_and_says_why(cpus, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with_units, without = cpus
    fast, plain = resolve("auto", with_units), resolve("auto", without)
    assert fast.name == "bf16" and "amx_bf16" in fast.reason and "avx512_bf16" in fast.reason
    assert plain.name == "32" and "no native bf16" in plain.reason


def test_an_explicit_setting_wins_over_the_machine(cpus):
    with_units, without = cpus
    assert resolve("32", with_units).name == "32" and resolve("bf16", without).name == "bf16"
    assert resolve("32", with_units).record() == {"name": "32", "reason": "set to 32 in params.yaml"}


def test_bf16_runs_matrix_products_in_bf16_and_32_leaves_them_float32(cpus):
    a, b = torch.randn(8, 8), torch.randn(8, 8)
    with resolve("bf16").context():
        assert (a @ b).dtype == torch.bfloat16
    with resolve("32").context():
        assert (a @ b).dtype == torch.float32
