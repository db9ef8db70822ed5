"""Benchmark reports name the CPU they ran on, widest vector unit included."""

from __future__ import annotations

from pathlib import Path

from evals.machine import cpu_description


def _cpuinfo(tmp_path: Path, name: str, flags: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: {name}\nflags\t\t: {flags}\n\n")
    return path


def test_avx2_only_cpu_is_reported_as_avx2(tmp_path: Path) -> None:
    described = cpu_description(_cpuinfo(tmp_path, "AMD EPYC 7B13", "fpu sse2 avx avx2 fma f16c"))
    assert described.startswith("AMD EPYC 7B13, ")
    assert described.endswith(", avx2")


def test_widest_unit_wins(tmp_path: Path) -> None:
    assert cpu_description(_cpuinfo(tmp_path, "Xeon", "avx2 avx512f amx_int8")).endswith(", amx")
    assert cpu_description(_cpuinfo(tmp_path, "Xeon", "avx2 avx512f")).endswith(", avx512f")
    assert cpu_description(_cpuinfo(tmp_path, "Old", "sse2")).endswith(", no avx2")


def test_missing_cpuinfo_still_describes_something(tmp_path: Path) -> None:
    assert cpu_description(tmp_path / "absent") != ""
