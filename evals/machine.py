"""What every benchmark report states about the run: model, device, matmul path, threads, machine.

Why one place: numbers are only comparable inside one table, and a reader
must see at a glance what produced a table.
"""

from __future__ import annotations

import platform
from typing import Any

import torch


def run_facts(loaded: Any) -> dict:
    """The report header for a run on ``loaded`` (an ``engine.runtime.LoadedModel``)."""
    return {
        "model": loaded.name,
        "device": str(loaded.device),
        "cpu_linear": getattr(loaded, "cpu_linear", "torch"),
        "threads": torch.get_num_threads(),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
    }
