"""Re-rotating cached RoPE keys: move a key from position p to p + delta.

PIE patches a KV cache after an edit instead of re-encoding the whole file. The
keys of every token after the edit were stored *after* RoPE at their old
positions; rotating them once more by `delta` (the edit's length change) puts
them where a full recompute would: rotations compose, R(p + d) = R(d) R(p).

Convention (Qwen2 / Llama, "rotate half"): frequency `i` in [0, D/2) rotates the
pair of dims (i, i + D/2) by angle `position * inv_freq[i]`:

    k' = k * cos(delta * theta) + rotate_half(k) * sin(delta * theta)
    rotate_half(x) = cat(-x[..., D/2:], x[..., :D/2])

Worked example (D = 2, theta = [1.0]): k = [1, 0] moved by delta = 1 becomes
[cos 1, sin 1] = [0.5403, 0.8415]; moved back by delta = -1 it is [1, 0] again.

Precision: the angle `delta * theta` is formed in float64 (exact: an integer
below 2**29 times a 24-bit mantissa fits in 53 bits) and only cos/sin are
rounded to float32, so the angle error does not grow with |delta|. A float32
angle would be off by up to |delta * theta| * 2**-24 rad (1.2e-4 rad at
delta = 2000). The multiply runs in float32 for half-precision keys, with one
rounding back to the keys' dtype. Rows with delta 0 come back unchanged
(cos = 1 and sin = 0 exactly).
"""

from __future__ import annotations

import torch
from torch import Tensor


def rope_inv_freq(head_dim: int, rope_theta: float, device: torch.device | str | None = None) -> Tensor:
    """RoPE inverse frequencies, float32, bit-identical to transformers' Qwen2 default RoPE.

    Same expression as `Qwen2RotaryEmbedding.compute_default_rope_parameters`
    (transformers 5.23), so re-rotation uses the very theta the model used:
    `1 / rope_theta ** (arange(0, D, 2) / D)`. Example: head_dim=4,
    rope_theta=10000 gives [1.0, 0.01].
    """
    assert head_dim > 0 and head_dim % 2 == 0, f"head_dim must be even, got {head_dim}"
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64).to(device=device, dtype=torch.float32) / head_dim
    return 1.0 / (rope_theta**exponents)  # [D/2]


def _check_args(keys: Tensor, deltas: Tensor, inv_freq: Tensor) -> None:
    assert keys.dim() == 4, f"keys must be [B, H, S, D], got shape {tuple(keys.shape)}"
    assert keys.is_floating_point(), f"keys must be floating point, got {keys.dtype}"
    seq, head_dim = keys.shape[-2], keys.shape[-1]
    assert head_dim % 2 == 0, f"head_dim must be even, got {head_dim}"
    assert deltas.shape == (seq,), f"deltas must be [S]={seq}, got shape {tuple(deltas.shape)}"
    assert not deltas.is_floating_point(), f"deltas must be integers, got {deltas.dtype}"
    assert inv_freq.shape == (head_dim // 2,), f"inv_freq must be [D/2]={head_dim // 2}, got {tuple(inv_freq.shape)}"
    assert deltas.device == keys.device == inv_freq.device, (
        f"keys, deltas, inv_freq on different devices: {keys.device}, {deltas.device}, {inv_freq.device}"
    )


def rotation_table(deltas: Tensor, inv_freq: Tensor) -> tuple[Tensor, Tensor]:
    """cos and sin of `deltas[s] * inv_freq[i]`, angle in float64, results float32: both [S, D/2].

    Tiny (S * D/2 entries); shared by every layer and head of one patch.
    """
    device = deltas.device
    if device.type == "cpu" and deltas.numel() > 1:
        # One edit shifts a long run of rows by the same amount: take cos/sin of
        # each distinct delta once (float64 trigonometry dominates on CPU).
        distinct, row_of = torch.unique(deltas, return_inverse=True)
        if distinct.numel() < deltas.numel():
            cos, sin = rotation_table(distinct, inv_freq)  # [U, D/2]
            return cos[row_of], sin[row_of]
    # MPS has no float64: build the table on the CPU there and move it back.
    work = torch.device("cpu") if device.type == "mps" else device
    angle = deltas.to(work, torch.float64)[:, None] * inv_freq.to(work, torch.float64)[None, :]  # [S, D/2]
    return angle.cos().to(device, torch.float32), angle.sin().to(device, torch.float32)


def rerotate_keys(keys: Tensor, deltas: Tensor, inv_freq: Tensor, out: Tensor | None = None) -> Tensor:
    """Move each row s of `keys` from its RoPE position p to p + deltas[s].

    keys: [B, H, S, D] any float dtype (a layer's cached keys, or a suffix slice
    of them); deltas: [S] integer, one shift per row, so several edits with
    different shifts go in one call; inv_freq: [D/2] float32 (`rope_inv_freq`).
    Returns a new tensor of keys' dtype and device, or writes into `out` (which
    may be `keys` itself, for an in-place patch) and returns it.

    Example: after replacing tokens [10, 12) by 5 new ones in a 20-token
    cache, the old rows 12..19 sit 3 positions too early:
    `rerotate_keys(k[:, :, 15:], torch.full((8,), 3), inv_freq)`.
    """
    _check_args(keys, deltas, inv_freq)
    return rerotate_with_table(keys, *rotation_table(deltas, inv_freq), out=out)


def rerotate_with_table(keys: Tensor, cos: Tensor, sin: Tensor, out: Tensor | None = None) -> Tensor:
    """``rerotate_keys`` with cos/sin from ``rotation_table`` given: [S, D/2], or [1, D/2] for
    one shift shared by every row (an edit moves all later rows alike; build the table once
    per patch, not once per layer)."""
    half = keys.shape[-1] // 2
    assert cos.shape == sin.shape and cos.shape[-1] == half and cos.shape[0] in (1, keys.shape[-2]), (cos.shape, keys.shape)
    k = keys.to(torch.float32)  # [B, H, S, D]; no copy for float32 keys
    x1, x2 = k[..., :half], k[..., half:]  # [B, H, S, D/2] each
    rotated = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).to(keys.dtype)  # [B, H, S, D]
    if out is None:
        return rotated
    assert out.shape == keys.shape and out.dtype == keys.dtype and out.device == keys.device, (
        f"out must match keys: {tuple(out.shape)} {out.dtype} {out.device}"
    )
    return out.copy_(rotated)


def rerotate_keys_reference(keys: Tensor, deltas: Tensor, inv_freq: Tensor) -> Tensor:
    """Slow float64 reference for tests: the textbook formula, written the transformers way.

    keys: [B, H, S, D]; deltas: [S]; inv_freq: [D/2]. Returns float64 [B, H, S, D].
    """
    _check_args(keys, deltas, inv_freq)
    k = keys.to(torch.float64)
    freqs = deltas.to(torch.float64)[:, None] * inv_freq.to(torch.float64)[None, :]  # [S, D/2]
    emb = torch.cat((freqs, freqs), dim=-1)  # [S, D]: frequency i drives dims i and i + D/2
    half = k.shape[-1] // 2
    rotate_half = torch.cat((-k[..., half:], k[..., :half]), dim=-1)  # [B, H, S, D]
    return k * emb.cos() + rotate_half * emb.sin()
