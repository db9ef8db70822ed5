"""Fused Triton kernel for `kernels.rope.rerotate_keys`: one read and one write of the keys.

The torch version makes several passes over the keys (upcast, four products,
concatenation, downcast); the patch path calls this on every layer's suffix
slice, so the kernel does the whole rotation in registers. Each program takes
a block of rows of one (batch, head), builds cos/sin for those rows from
`deltas` and `inv_freq`, and writes k'. Arbitrary strides, so a slice of a
cache tensor can be patched in place (`out=keys`): a program reads its block
before it writes it, and no two programs touch the same elements.

Angle precision matches the torch version without float64 trigonometry (slow
on most GPUs): `delta * theta` in float64 (exact), reduced by whole turns in
float64 to [-pi, pi], split into float32 hi + lo, cos/sin of hi in float32 and
a first-order correction for lo. Runs on CPU under TRITON_INTERPRET=1 for tests.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from kernels.rope import _check_args

_INV_TWO_PI = 0.15915494309189535  # 1 / (2 pi)
_TWO_PI = 6.283185307179586


@triton.jit
def _rerotate_kernel(
    k_ptr,
    out_ptr,
    delta_ptr,
    inv_freq_ptr,
    S,
    H,
    stride_kb,
    stride_kh,
    stride_ks,
    stride_kd,
    stride_ob,
    stride_oh,
    stride_os,
    stride_od,
    HALF: tl.constexpr,
    BLOCK_S: tl.constexpr,
    BLOCK_HALF: tl.constexpr,
):
    pid_s = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    rows = pid_s.to(tl.int64) * BLOCK_S + tl.arange(0, BLOCK_S)  # [BS]
    cols = tl.arange(0, BLOCK_HALF)  # [BH]
    row_ok = rows < S
    col_ok = cols < HALF
    mask = row_ok[:, None] & col_ok[None, :]  # [BS, BH]

    # Angle: exact float64 product, reduced to [-pi, pi] in float64, split into
    # float32 hi + lo; cos/sin of hi in float32, then one Taylor step for lo
    # (|lo| < 2**-22, so lo**2 terms are below float32 resolution).
    delta = tl.load(delta_ptr + rows, mask=row_ok, other=0).to(tl.float64)  # [BS]
    theta = tl.load(inv_freq_ptr + cols, mask=col_ok, other=0.0).to(tl.float64)  # [BH]
    angle = delta[:, None] * theta[None, :]  # [BS, BH] float64
    turns = angle * _INV_TWO_PI
    turns = (turns + tl.where(turns >= 0, 0.5, -0.5)).to(tl.int64)  # round half away from zero
    angle = angle - turns.to(tl.float64) * _TWO_PI  # [-pi, pi]
    hi = angle.to(tl.float32)
    lo = (angle - hi.to(tl.float64)).to(tl.float32)
    cos_hi = tl.cos(hi)
    sin_hi = tl.sin(hi)
    c = cos_hi - sin_hi * lo  # [BS, BH] float32
    s = sin_hi + cos_hi * lo

    # Pairs (i, i + D/2) rotate together.
    k1_ptrs = k_ptr + b * stride_kb + h * stride_kh + rows[:, None] * stride_ks + cols[None, :] * stride_kd
    k2_ptrs = k1_ptrs + HALF * stride_kd
    x1 = tl.load(k1_ptrs, mask=mask, other=0.0).to(tl.float32)  # [BS, BH]
    x2 = tl.load(k2_ptrs, mask=mask, other=0.0).to(tl.float32)
    y1 = x1 * c - x2 * s
    y2 = x2 * c + x1 * s

    o1_ptrs = out_ptr + b * stride_ob + h * stride_oh + rows[:, None] * stride_os + cols[None, :] * stride_od
    o2_ptrs = o1_ptrs + HALF * stride_od
    tl.store(o1_ptrs, y1.to(out_ptr.dtype.element_ty), mask=mask)
    tl.store(o2_ptrs, y2.to(out_ptr.dtype.element_ty), mask=mask)


def rerotate_keys_triton(keys: Tensor, deltas: Tensor, inv_freq: Tensor, out: Tensor | None = None) -> Tensor:
    """Same contract as `kernels.rope.rerotate_keys`, one fused kernel launch.

    keys: [B, H, S, D] (any strides, e.g. `cache.layers[i].keys[:, :, start:]`);
    deltas: [S] integer; inv_freq: [D/2] float32; `out` may be `keys` for an
    in-place patch. Returns `out` or a new tensor like `keys`.
    """
    _check_args(keys, deltas, inv_freq)
    batch, heads, seq, head_dim = keys.shape
    if out is None:
        out = torch.empty_like(keys)
    assert out.shape == keys.shape and out.dtype == keys.dtype and out.device == keys.device, (
        f"out must match keys: {tuple(out.shape)} {out.dtype} {out.device}"
    )
    if keys.numel() == 0:
        return out
    half = head_dim // 2
    deltas = deltas.contiguous()
    inv_freq = inv_freq.to(torch.float32).contiguous()
    block_half = triton.next_power_of_2(half)
    block_s = max(1, min(triton.next_power_of_2(seq), 4096 // block_half))  # about 4k pairs per program
    grid = (triton.cdiv(seq, block_s), batch * heads)
    _rerotate_kernel[grid](
        keys,
        out,
        deltas,
        inv_freq,
        seq,
        heads,
        *keys.stride(),
        *out.stride(),
        HALF=half,
        BLOCK_S=block_s,
        BLOCK_HALF=block_half,
    )
    return out
