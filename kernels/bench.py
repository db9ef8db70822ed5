"""Micro-benchmarks of the kernels: the PIE key re-rotation (what one edit's patch costs per model), and
the CPU linear and attention variants side by side (``bench_cpu_kernels``, ``livefim bench kernels``).

A patch re-rotates the suffix of every layer's keys in place, so the number
that matters is milliseconds for all `layers` slices of [1, heads, rows,
head_dim]. Example (Qwen2.5-Coder 0.5B, 3000 rows after the edit):
`bench_rerotate(3000, 2, 64, 24, "cuda")` -> {"torch_ms": ..., "triton_ms": ...}.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

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


def bench_cpu_kernels(
    rows: tuple[int, ...] = (1, 2, 4, 8, 16, 256),
    shape: tuple[int, int] = (8960, 1536),
    contexts: tuple[int, ...] = (1024, 4096),
    query_rows: tuple[int, ...] = (1, 9),
    repeats: int = 20,
    dram_bytes: int = 256 << 20,
) -> dict:
    """Side by side in one process: one int8 projection ``shape = (out, in)`` through every CPU variant this
    machine runs, and attention of ``query_rows`` rows over ``contexts`` keys (the 1.5B's heads: 12 query,
    2 key, 128 wide) through each variant of the batch-invariant kernel (``kernel_{variant}_ms``) and through
    SDPA with folded heads. Medians in ms.

    The int8-activation variants are timed twice: on one weight that stays in cache (``{variant}_ms``) and
    on copies of it that add up to ``dram_bytes``, called in turn (``{variant}_dram_ms``, per call), as a
    model's layers are: each call then reads its weight from memory. The second is what a decode step
    sees; the first alone hid a 9-row pass that cost 3x a step on Zen 5 (BENCHMARKS.md).

    Why: the variants' ratios are what decide the defaults (``w8a8``, AMX, the attention kernel), and only
    a same-process comparison is fair on a shared machine."""
    from kernels import cpu_attention, cpu_int8
    from kernels.attention import grouped_query_attention

    cpu = torch.device("cpu")
    generator = torch.Generator().manual_seed(0)
    result: dict = {"linear": [], "attention": [], "shape": list(shape)}
    if cpu_int8.kernel_available():
        out_features, in_features = shape
        k16 = cpu_int8.pack(torch.randn(out_features, in_features, generator=generator) * 0.05)
        vnni = cpu_int8.to_vnni(k16)
        variants: list[tuple[str, cpu_int8.PackedInt8, str | None]] = [(isa, k16, isa) for isa in cpu_int8.available_isas()]
        variants.append(("w8a8_avx2", vnni, "avx2"))  # int8 activations on any AVX2 CPU
        if cpu_int8.vnni_available():
            variants.append(("vnni", vnni, "vnni"))
            if cpu_int8.amx_available():
                variants.append(("amx", vnni, "amx"))
        copies = [vnni] + [replace(vnni, weights=vnni.weights.clone(), scales=vnni.scales.clone())
                           for _ in range(max(0, dram_bytes // vnni.weights.numel() - 1))]
        for count in rows:
            x = torch.randn(count, in_features, generator=generator)
            timings: dict = {"rows": count}
            for name, packed, isa in variants:
                timings[f"{name}_ms"] = round(_time_ms(lambda: cpu_int8.linear(x, packed, None, isa=isa), cpu, repeats), 3)
                if packed is vnni:  # the int8-activation variants: also with the weight read from memory
                    def sweep() -> None:
                        for weight in copies:
                            cpu_int8.linear(x, weight, None, isa=isa)

                    timings[f"{name}_dram_ms"] = round(_time_ms(sweep, cpu, max(2, repeats // 4)) / len(copies), 3)
            result["linear"].append(timings)
    for context in contexts:
        for count in query_rows:
            q = torch.randn(1, count, 12, 128, generator=generator).transpose(1, 2)
            k = torch.randn(1, 2, context + 64, 128, generator=generator)[:, :, :context]
            v = torch.randn(1, 2, context + 64, 128, generator=generator)[:, :, :context]
            mask = torch.ones(count, context, dtype=torch.bool).tril(context - count)[None, None] if count > 1 else None
            timings = {"keys": context, "rows": count,
                       "sdpa_folded_ms": round(_time_ms(lambda: grouped_query_attention(q, k, v, mask), cpu, repeats), 3)}
            if cpu_attention.available():
                for isa in cpu_attention.available_isas():  # every variant, the default (widest) last
                    timings[f"kernel_{isa}_ms"] = round(
                        _time_ms(lambda: cpu_attention.attention(q, k, v, mask, isa=isa), cpu, repeats), 3)
            result["attention"].append(timings)
    return result
