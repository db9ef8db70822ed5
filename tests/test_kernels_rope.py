"""Re-rotating cached RoPE keys (kernels/): the fast paths against a float64 reference.

Tolerances come from one per-element bound (tests/_rope_check.py): for float32
keys 4 float32 roundings of the pair's magnitude |x_i| + |x_{i+-D/2}|, plus
half an ulp of the result for float16/bfloat16 keys (their single rounding back
from float32). Both fast paths must stay under it, so a wrong pairing, sign or
frequency (errors of order |k|) can never pass.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers.models.qwen2.configuration_qwen2 import Qwen2Config
from transformers.models.qwen2.modeling_qwen2 import Qwen2RotaryEmbedding, apply_rotary_pos_emb

from kernels import rerotate, rerotate_keys, rerotate_keys_reference, rope_inv_freq
from tests._rope_check import CASES, U32, UNIT_ROUNDOFF, error_ratio, make_case, pair_magnitude

REPO = Path(__file__).resolve().parent.parent


def test_worked_example_by_hand() -> None:
    # D = 2: one frequency, theta = 1. The key [1, 0] moved by +1 position is
    # [cos 1, sin 1]; a row with delta 0 stays [1, 0].
    inv_freq = rope_inv_freq(2, 1e6)
    assert inv_freq.tolist() == [1.0]
    keys = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])  # [1, 1, 2, 2]
    out = rerotate_keys(keys, torch.tensor([1, 0]), inv_freq)
    assert out[0, 0, 0].tolist() == pytest.approx([math.cos(1.0), math.sin(1.0)], abs=1e-7)
    assert out[0, 0, 1].tolist() == [1.0, 0.0]


@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("rope_theta", [1e6, 10000.0, 1000000])
def test_inv_freq_is_bit_identical_to_transformers(head_dim: int, rope_theta: float) -> None:
    config = Qwen2Config(hidden_size=2 * head_dim, num_attention_heads=2, num_key_value_heads=1, head_dim=head_dim, rope_theta=rope_theta)
    assert torch.equal(rope_inv_freq(head_dim, rope_theta), Qwen2RotaryEmbedding(config).inv_freq)


@pytest.mark.parametrize(("name", "shape", "dtype", "kind"), CASES, ids=[case[0] for case in CASES])
def test_torch_version_within_bound_of_float64_reference(name: str, shape: tuple[int, int, int, int], dtype: torch.dtype, kind: str) -> None:
    keys, deltas = make_case(shape, dtype, kind)
    inv_freq = rope_inv_freq(shape[-1], 1e6)
    out = rerotate_keys(keys, deltas, inv_freq)
    assert out.dtype == dtype and out.shape == keys.shape
    max_err, ratio = error_ratio(out, rerotate_keys_reference(keys, deltas, inv_freq), keys)
    assert ratio <= 1.0, f"{name}: max error {max_err:.3g} is {ratio:.3g} x the bound"
    zero = deltas == 0
    assert torch.equal(out[:, :, zero], keys[:, :, zero]), "rows with delta 0 must come back unchanged"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_delta_then_minus_delta_is_identity(dtype: torch.dtype) -> None:
    # Two passes, each within the bound above: |back - k| <= 2 * (u + 4 * u32) * pair
    # (a rotation does not grow the first pass's error).
    keys, deltas = make_case((1, 2, 37, 64), dtype, "mixed", seed=3)
    inv_freq = rope_inv_freq(64, 1e6)
    back = rerotate_keys(rerotate_keys(keys, deltas, inv_freq), -deltas, inv_freq)
    err = (back.double() - keys.double()).abs()
    bound = 2 * (UNIT_ROUNDOFF[dtype] + 4 * U32) * pair_magnitude(keys)
    assert bool((err <= bound).all()), f"max round-trip error {err.max().item():.3g}"


def test_in_place_on_a_suffix_slice() -> None:
    # The patch path moves rows 13.. of a layer's keys and leaves rows before them alone.
    cache, deltas = make_case((1, 2, 50, 64), torch.float16, "mixed", seed=1)
    original = cache.clone()
    inv_freq = rope_inv_freq(64, 1e6)
    suffix = cache[:, :, 13:]
    result = rerotate_keys(suffix, deltas[13:], inv_freq, out=suffix)
    assert result.data_ptr() == suffix.data_ptr()
    assert torch.equal(cache[:, :, :13], original[:, :, :13])
    assert torch.equal(cache[:, :, 13:], rerotate_keys(original[:, :, 13:], deltas[13:], inv_freq))


def test_dispatch_on_cpu_is_the_torch_version() -> None:
    keys, deltas = make_case((1, 2, 37, 64), torch.float16, "mixed")
    inv_freq = rope_inv_freq(64, 1e6)
    assert torch.equal(rerotate(keys, deltas, inv_freq), rerotate_keys(keys, deltas, inv_freq))


# --- The physical fact PIE relies on, with transformers' own RoPE -----------------------------

POSITIONS = torch.tensor([300, 301, 512, 1000, 2047, 4095, 5000, 7000, 7999, 8000])  # p >= 300 so p - 300 >= 0
SHIFTS = [-300, -1, 1, 57, 2000]


def qwen2_rotary(head_dim: int = 64) -> Qwen2RotaryEmbedding:
    config = Qwen2Config(
        hidden_size=4 * head_dim,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=head_dim,
        rope_theta=1e6,
        max_position_embeddings=32768,
    )
    return Qwen2RotaryEmbedding(config)


def rope_at(rotary: Qwen2RotaryEmbedding, keys: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """keys [B, H, S, D] rotated to positions [S], exactly as Qwen2Attention does it (float32 angles)."""
    cos, sin = rotary(keys, positions[None])  # [1, S, D] each
    return apply_rotary_pos_emb(keys, keys, cos, sin)[1]


def rope_at_exact(rotary: Qwen2RotaryEmbedding, keys: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Same, with transformers' apply_rotary_pos_emb and inv_freq but float64 angles and keys."""
    freqs = positions.double()[:, None] * rotary.inv_freq.double()[None, :]  # [S, D/2]
    emb = torch.cat((freqs, freqs), dim=-1)[None]  # [1, S, D], the layout of Qwen2RotaryEmbedding.forward
    return apply_rotary_pos_emb(keys.double(), keys.double(), emb.cos(), emb.sin())[1]


@pytest.mark.parametrize("shift", SHIFTS)
def test_rerotated_key_equals_key_computed_at_shifted_position(shift: int) -> None:
    # transformers forms each angle p * theta_i in float32: one rounding, off by
    # up to u32 * p * theta_i rad (about 5e-4 rad at p = 8000, theta_0 = 1), so
    # its own keys at p = 8000 are about 5e-4 * |k| from exact. Rotating the key
    # at p by shift therefore differs from transformers' key at p + shift by at
    # most u32 * theta_i * (p + (p + shift)) * pair (the two angle roundings)
    # plus 12 * u32 * pair (float32 arithmetic of three rotations).
    rotary = qwen2_rotary()
    keys = torch.randn(1, 2, len(POSITIONS), 64, generator=torch.Generator().manual_seed(0))
    deltas = torch.full_like(POSITIONS, shift)
    patched = rerotate_keys(rope_at(rotary, keys, POSITIONS), deltas, rotary.inv_freq)
    direct = rope_at(rotary, keys, POSITIONS + deltas)
    theta = torch.cat((rotary.inv_freq, rotary.inv_freq)).double()  # [D]: the frequency of each dim
    angle_sum = (2 * POSITIONS + shift).double()[:, None] * theta[None, :]  # [S, D]
    bound = U32 * (angle_sum + 12) * pair_magnitude(keys)
    err = (patched.double() - direct.double()).abs()
    assert bool((err <= bound).all()), f"max error {err.max().item():.3g}, worst ratio {(err / bound).max().item():.3g}"


@pytest.mark.parametrize("shift", SHIFTS)
def test_rerotation_is_exact_when_the_angles_are(shift: int) -> None:
    # With transformers' rotation applied at float64 angles, the float32 key at
    # p re-rotated by shift matches the key at p + shift to ~1e-6 at every p:
    # the only errors left are float32 roundings (the key's own and ours).
    rotary = qwen2_rotary()
    keys = torch.randn(1, 2, len(POSITIONS), 64, generator=torch.Generator().manual_seed(0))
    deltas = torch.full_like(POSITIONS, shift)
    at_p = rope_at_exact(rotary, keys, POSITIONS).float()
    patched = rerotate_keys(at_p, deltas, rotary.inv_freq)
    direct = rope_at_exact(rotary, keys, POSITIONS + deltas)
    err = (patched.double() - direct).abs()
    assert bool((err <= 6 * U32 * pair_magnitude(keys)).all()), f"max error {err.max().item():.3g}"
    assert err.max().item() < 1e-5


# --- Triton kernel, through triton's CPU interpreter -----------------------------------------


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed (test extra, Linux x86_64)")
def test_triton_kernel_matches_reference_in_interpreter() -> None:
    # TRITON_INTERPRET is read when triton is imported, so the kernel runs in a
    # child process (this one may have imported triton without it).
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "ACTIVE")}
    result = subprocess.run(
        [sys.executable, "-m", "tests._rope_check"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {row["case"]: row for row in map(json.loads, result.stdout.splitlines())}
    expected = [case[0] for case in CASES] + ["fp16-inplace-suffix-slice", "fp32-noncontiguous"]
    assert sorted(set(rows) - {"roundtrip"}) == sorted(expected)
    for name in expected:
        row = rows[name]
        assert row["bound_ratio"] <= 1.0, row
        assert row["zero_rows_equal"], row
    # Round trip of float32 keys (std 2, |pair| < 16): within 2 * 4 * u32 * 16 = 7.6e-6.
    assert rows["roundtrip"]["max_err"] < 7.6e-6, rows["roundtrip"]


def test_kernels_import_nothing_of_ours() -> None:
    # kernels/ is pure tensor math; engine/cache/context depend on it, never the reverse.
    ours = {"engine", "cache", "context", "lsp", "livefim", "evals"}
    for path in (REPO / "kernels").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not {name.split(".")[0] for name in names} & ours, f"{path.name} imports {names}"


def test_bench_reports_torch_time_on_cpu() -> None:
    from kernels.bench import bench_rerotate

    result = bench_rerotate(rows=16, heads=2, head_dim=64, layers=2, device="cpu", repeats=2)
    assert result["torch_ms"] > 0 and result["triton_ms"] is None  # Triton is timed on CUDA only
    assert result["dtype"] == "float32"


@pytest.mark.parametrize("delta", [-700, -1, 3, 2048])
def test_one_shared_shift_table_equals_the_per_row_version(delta: int) -> None:
    from cache import kv
    from cache.pie import shift_keys

    torch.manual_seed(0)
    keys = torch.randn(1, 2, 37, 64)
    inv_freq = rope_inv_freq(64, 1_000_000.0)
    per_row = rerotate_keys(keys, torch.full((37,), delta, dtype=torch.int64), inv_freq)
    shared = shift_keys(kv.RopeSpec(inv_freq=inv_freq, head_dim=64), delta)(keys)
    assert torch.equal(shared, per_row)
    reference = rerotate_keys_reference(keys, torch.full((37,), delta, dtype=torch.int64), inv_freq)
    assert torch.allclose(shared.double(), reference, atol=1e-5)
