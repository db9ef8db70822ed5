"""Shared by tests/test_kernels_rope.py: the error bound, the cases, and the Triton child.

Run as `TRITON_INTERPRET=1 python -m tests._rope_check` it checks the Triton
kernel (on CPU, through triton's interpreter) against the float64 reference and
the torch version and prints one JSON line per case. It runs in a subprocess
because TRITON_INTERPRET is read when triton is imported, and the pytest
process may already have imported triton without it.

Error bound, per element (u = the dtype's unit roundoff: 2**-24 for float32,
2**-11 for float16, 2**-8 for bfloat16; u32 = 2**-24):

    |out - ref| <= u * |ref| + 4 * u32 * (|x_i| + |x_{i +- D/2}|) + tiny

The first term is the one rounding of the float32 result to the keys' dtype
(zero for float32 keys). The second covers the float32 work: cos and sin
rounded (1 u32 each), two products and one sum (1 u32 each), all relative to
the pair's magnitude |x_i| + |x_partner| (each product is at most that big).
`tiny` is half the dtype's smallest subnormal (2**-25 for float16), so a
zero pair has a nonzero bound.
"""

from __future__ import annotations

import json
import os

import torch
from torch import Tensor

UNIT_ROUNDOFF = {torch.float32: 2.0**-24, torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}
U32 = 2.0**-24

# (name, shape [B, H, S, D], dtype, deltas kind). H is the KV head count: GQA
# models cache few heads (Qwen2.5-Coder 0.5B/1.5B: 2, 7B: 4, D 64 or 128).
CASES: list[tuple[str, tuple[int, int, int, int], torch.dtype, str]] = [
    ("fp32-d64-h2-s37-mixed", (1, 2, 37, 64), torch.float32, "mixed"),
    ("fp16-d64-h2-s37-mixed", (1, 2, 37, 64), torch.float16, "mixed"),
    ("fp32-d128-h4-s37-negative", (1, 4, 37, 128), torch.float32, "negative"),
    ("fp16-d128-h1-s37-positive", (2, 1, 37, 128), torch.float16, "positive"),
    ("fp32-d64-h8-s1-positive", (1, 8, 1, 64), torch.float32, "positive"),
    ("fp16-d128-h2-s1-negative", (1, 2, 1, 128), torch.float16, "negative"),
    ("fp32-d64-h2-s37-zero", (1, 2, 37, 64), torch.float32, "zero"),
    ("bf16-d64-h2-s37-mixed", (1, 2, 37, 64), torch.bfloat16, "mixed"),
]


def make_deltas(kind: str, seq: int, generator: torch.Generator) -> Tensor:
    """deltas [S] int64: all positive, all negative, all zero, or mixed per row (every 3rd row zero)."""
    if kind == "zero":
        return torch.zeros(seq, dtype=torch.int64)
    magnitude = torch.randint(1, 9000, (seq,), generator=generator)
    if kind == "positive":
        return magnitude
    if kind == "negative":
        return -magnitude
    assert kind == "mixed", kind
    sign = torch.where(torch.arange(seq) % 2 == 0, 1, -1)
    deltas = magnitude * sign
    deltas[::3] = 0
    return deltas


def make_case(shape: tuple[int, int, int, int], dtype: torch.dtype, kind: str, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Random keys [B, H, S, D] (std 2, like real cached keys) and deltas [S]."""
    generator = torch.Generator().manual_seed(seed)
    keys = (2.0 * torch.randn(shape, generator=generator)).to(dtype)
    return keys, make_deltas(kind, shape[2], generator)


def pair_magnitude(keys: Tensor) -> Tensor:
    """|x_i| + |x_partner| for each element, partner = the other dim of its RoPE pair. [B, H, S, D] float64."""
    k = keys.to(torch.float64).abs()
    half = k.shape[-1] // 2
    pair = k[..., :half] + k[..., half:]
    return torch.cat((pair, pair), dim=-1)


def error_ratio(out: Tensor, ref: Tensor, keys: Tensor, final_rounding_units: float = 1.0) -> tuple[float, float]:
    """(max |out - ref|, max of |out - ref| / bound); the bound is the module docstring's.

    `final_rounding_units=2` allows a truncating (not rounding) final cast: up
    to one whole ulp instead of half of one.
    """
    err = (out.to(torch.float64) - ref).abs()
    final_rounding = 0.0 if out.dtype == torch.float32 else final_rounding_units * UNIT_ROUNDOFF[out.dtype] * ref.abs()
    finfo = torch.finfo(out.dtype)
    tiny = finfo.tiny * finfo.eps / 2  # half the smallest subnormal
    bound = final_rounding + 4 * U32 * pair_magnitude(keys) + tiny
    return err.max().item(), (err / bound).max().item()


def _triton_main() -> None:
    assert os.environ.get("TRITON_INTERPRET") == "1", "run with TRITON_INTERPRET=1"
    from kernels.rope import rerotate_keys, rerotate_keys_reference, rope_inv_freq
    from kernels.rope_triton import rerotate_keys_triton

    def report(name: str, out: Tensor, keys: Tensor, deltas: Tensor, inv_freq: Tensor) -> None:
        ref = rerotate_keys_reference(keys, deltas, inv_freq)
        # triton 3.9's interpreter casts float32 -> bfloat16 by truncation
        # (interpreter.py cast_impl passes no rounding mode); GPUs round to nearest even.
        max_err, ratio = error_ratio(out, ref, keys, 2.0 if out.dtype == torch.bfloat16 else 1.0)
        torch_out = rerotate_keys(keys, deltas, inv_freq)
        zero = deltas == 0
        print(
            json.dumps(
                {
                    "case": name,
                    "dtype": str(out.dtype),
                    "max_err": max_err,
                    "bound_ratio": ratio,
                    "max_diff_vs_torch": (out.to(torch.float64) - torch_out.to(torch.float64)).abs().max().item(),
                    "zero_rows_equal": bool(torch.equal(out[:, :, zero], keys[:, :, zero])),
                }
            ),
            flush=True,
        )

    for name, shape, dtype, kind in CASES:
        keys, deltas = make_case(shape, dtype, kind)
        inv_freq = rope_inv_freq(shape[-1], 1e6)
        report(name, rerotate_keys_triton(keys, deltas, inv_freq), keys, deltas, inv_freq)

    # In place on a suffix slice of a cache tensor, as the patch path calls it:
    # rows 13.. move, rows before them must stay untouched.
    cache, deltas = make_case((1, 2, 50, 64), torch.float16, "mixed", seed=1)
    inv_freq = rope_inv_freq(64, 1e6)
    original = cache.clone()
    suffix = cache[:, :, 13:]
    result = rerotate_keys_triton(suffix, deltas[13:], inv_freq, out=suffix)
    assert result.data_ptr() == suffix.data_ptr()
    assert torch.equal(cache[:, :, :13], original[:, :, :13]), "rows before the slice changed"
    report("fp16-inplace-suffix-slice", cache[:, :, 13:], original[:, :, 13:], deltas[13:], inv_freq)

    # Non-contiguous keys: stored [B, S, H, D] and viewed as [B, H, S, D].
    stored, _ = make_case((1, 37, 4, 128), torch.float32, "mixed", seed=2)
    keys = stored.transpose(1, 2)  # [1, 4, 37, 128], stride of S is 4 * 128
    deltas = make_deltas("mixed", 37, torch.Generator().manual_seed(2))
    inv_freq = rope_inv_freq(128, 1e6)
    report("fp32-noncontiguous", rerotate_keys_triton(keys, deltas, inv_freq), keys, deltas, inv_freq)

    # delta, then -delta: back to the start.
    keys, deltas = make_case((1, 2, 37, 64), torch.float32, "mixed", seed=3)
    inv_freq = rope_inv_freq(64, 1e6)
    back = rerotate_keys_triton(rerotate_keys_triton(keys, deltas, inv_freq), -deltas, inv_freq)
    print(json.dumps({"case": "roundtrip", "max_err": (back - keys).abs().max().item()}), flush=True)


if __name__ == "__main__":
    _triton_main()
