"""What every benchmark report states about the run: model, device, matmul path, threads, machine.

Why one place: numbers are only comparable inside one table, and a reader
must see at a glance what produced a table.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch


def run_facts(loaded: Any) -> dict:
    """The report header for a run on ``loaded`` (an ``engine.runtime.LoadedModel``)."""
    return {
        "model": loaded.name,
        "device": str(loaded.device),
        "cpu_linear": cpu_linear_description(getattr(loaded, "cpu_linear", "torch")),
        "threads": torch.get_num_threads(),
        **machine_facts(),
    }


def cpu_linear_description(path: str) -> str:
    """``"int8 (avx512)"`` for the int8 path (which kernel variant ran), ``"w8a8 (avx2)"``,
    ``"w8a8 (avx512-vnni)"`` or ``"w8a8 (avx512-vnni, amx)"`` (AMX serving batches), the path's name otherwise."""
    if path == "w8a8":
        from kernels.cpu_int8 import amx_available, vnni_available

        if not vnni_available():
            return "w8a8 (avx2)"
        return "w8a8 (avx512-vnni, amx)" if amx_available() else "w8a8 (avx512-vnni)"
    if path != "int8":
        return path
    from kernels.cpu_int8 import default_isa

    return f"int8 ({default_isa()})"


def machine_facts() -> dict:
    """Architecture and CPU of this machine, for every JSON report: ``{"machine": "x86_64", "cpu": "..."}``."""
    return {"machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "cpu": cpu_description()}


def cpu_description(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name, core count and widest vector unit, e.g. ``"AMD EPYC 7B13, 2 cores, avx2"``.

    Why: these machines differ from run to run (AVX2-only EPYC one day, an
    AVX-512/AMX Xeon the next) and CPU numbers mean little without it.
    """
    from kernels.cpu_int8 import cpu_flags, cpu_model_name

    name = cpu_model_name(cpuinfo)
    if name is None:
        return platform.processor() or "unknown"
    name = name or "unknown"
    flags = cpu_flags(cpuinfo)
    vector = next((unit for unit in ("amx_int8", "avx512f", "avx2") if unit in flags), "no avx2")
    return f"{name}, {os.cpu_count()} cores, {vector.replace('_int8', '')}"
