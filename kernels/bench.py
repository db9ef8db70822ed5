"""Micro-benchmark of the PIE key re-rotation: what one edit's patch costs per model.

A patch re-rotates the suffix of every layer's keys in place, so the number
that matters is milliseconds for all `layers` slices of [1, heads, rows,
head_dim]. Example (Qwen2.5-Coder 0.5B, 3000 rows after the edit):
`bench_rerotate(3000, 2, 64, 24, "cuda")` -> {"torch_ms": ..., "triton_ms": ...}.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from kernels.dispatch import triton_available
from kernels.rope import rerotate_keys, rope_inv_freq


def _time_ms(step: Callable[[], None], device: torch.device, repeats: int) -> float:
    """Median wall time of `step` in ms, after one warm-up call (compiles Triton, fills caches)."""
    step()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - start) * 1e3)
    return sorted(times)[len(times) // 2]


def bench_rerotate(
    rows: int,
    heads: int,
    head_dim: int,
    layers: int,
    device: torch.device | str,
    dtype: torch.dtype | None = None,
    repeats: int = 10,
) -> dict[str, float | int | str | None]:
    """ms to re-rotate `rows` keys in place on every layer: torch always, Triton on CUDA only.

    dtype defaults to float16 on CUDA and float32 elsewhere (what the engine
    caches there). `triton_ms` is None when the kernel does not run (no CUDA,
    or triton missing): its CPU interpreter is a test tool, not a fast path.
    """
    device = torch.device(device)
    dtype = dtype or (torch.float16 if device.type == "cuda" else torch.float32)
    generator = torch.Generator().manual_seed(0)
    caches = [torch.randn(1, heads, rows, head_dim, generator=generator).to(device, dtype) for _ in range(layers)]
    deltas = torch.full((rows,), 7, dtype=torch.int64, device=device)
    inv_freq = rope_inv_freq(head_dim, 1e6, device=device)

    def torch_step() -> None:
        for keys in caches:
            rerotate_keys(keys, deltas, inv_freq, out=keys)

    result: dict[str, float | int | str | None] = {
        "rows": rows,
        "heads": heads,
        "head_dim": head_dim,
        "layers": layers,
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        "torch_ms": _time_ms(torch_step, device, repeats),
        "triton_ms": None,
    }
    if device.type == "cuda" and triton_available():
        from kernels.rope_triton import rerotate_keys_triton

        def triton_step() -> None:
            for keys in caches:
                rerotate_keys_triton(keys, deltas, inv_freq, out=keys)

        result["triton_ms"] = _time_ms(triton_step, device, repeats)
    return result
