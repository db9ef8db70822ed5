"""Qwen2 decoder layers on the int8 CPU path with their sibling projections fused.

Why: a decode step is ~200 small calls, and each int8 projection pays a fixed
price beyond reading its weights: Python, an OpenMP fork and join, rounding its
input rows to int8 again (and, on AMX, configuring the tiles). ``q``, ``k`` and
``v`` read the same normalized input, as do ``gate`` and ``up``, so one call
each can serve them: 4 kernel calls a layer instead of 7. A fused output channel
is computed exactly as it was alone (the kernels work 16 channels at a time,
each from its own weights), so the logits keep every bit, and the layer's other
steps are transformers' own operations in transformers' order. Measured on the
1.5B at a 2k context: a decode step 86 -> 80 ms, a 9-row pass 113 -> 107 ms
(BENCHMARKS.md); ``tests/test_fused_layers.py`` holds it to the unfused model.

The fused weights are one tensor per layer; the original modules keep views
into it, so nothing is stored twice and anything that calls them still works.

Example (shapes only)::

    >>> import torch
    >>> from kernels import cpu_int8
    >>> parts = [cpu_int8.pack_reference(torch.randn(n, 64)) for n in (32, 16)]
    >>> fused = concat_packed(parts)
    >>> fused.out_features, tuple(fused.weights.shape)
    (48, (3, 64, 16))
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from kernels import cpu_int8
from kernels.cpu_int8 import Int8Linear, PackedInt8


def concat_packed(parts: list[PackedInt8]) -> PackedInt8:
    """One weight whose output channels are ``parts``' in order; every part must fill whole 16-channel tiles
    (else its padding channels would sit between two parts' channels)."""
    assert all(p.out_features % cpu_int8.TILE == 0 for p in parts), [p.out_features for p in parts]
    assert len({(p.layout, p.in_features) for p in parts}) == 1, [(p.layout, p.in_features) for p in parts]
    return PackedInt8(torch.cat([p.weights for p in parts]), torch.cat([p.scales for p in parts]),
                      sum(p.out_features for p in parts), parts[0].layout)


class FusedProjection:
    """Several ``Int8Linear`` of one input as one kernel call; the originals become views of the fused weight."""

    def __init__(self, layers: list[Int8Linear]) -> None:
        self.sizes = [layer.out_features for layer in layers]
        self.packed = concat_packed([layer.packed for layer in layers])
        biases = [layer.bias for layer in layers]
        self.bias = None if all(b is None for b in biases) else torch.cat(
            [b if b is not None else torch.zeros(n) for b, n in zip(biases, self.sizes)])
        tile = 0
        for layer, size in zip(layers, self.sizes):  # views into the fused tensors: no second copy
            tiles = size // cpu_int8.TILE
            layer.packed = PackedInt8(self.packed.weights[tile : tile + tiles], self.packed.scales[tile : tile + tiles],
                                      size, self.packed.layout)
            tile += tiles

    def __call__(self, x: Tensor) -> tuple[Tensor, ...]:
        """x: [..., K] -> one [..., n] per fused layer."""
        return cpu_int8.linear(x, self.packed, self.bias).to(x.dtype).split(self.sizes, dim=-1)


def _fusable(layer: Any) -> bool:
    attention, mlp = layer.self_attn, layer.mlp
    projections = (attention.q_proj, attention.k_proj, attention.v_proj, mlp.gate_proj, mlp.up_proj)
    return (all(isinstance(p, Int8Linear) for p in projections)
            and len({p.packed.layout for p in projections}) == 1
            and all(p.out_features % cpu_int8.TILE == 0 for p in projections)
            and getattr(mlp, "act_fn", None) is not None)


def _rms_norm(hidden: Tensor, norm: Any) -> Tensor:
    """transformers' ``Qwen2RMSNorm.forward``, the same operations in the same order (so the same bits)."""
    dtype = hidden.dtype
    hidden = hidden.to(torch.float32)
    variance = hidden.pow(2).mean(-1, keepdim=True)
    hidden = hidden * torch.rsqrt(variance + norm.variance_epsilon)
    return norm.weight * hidden.to(dtype)


def fused_decoder_layer_forward(
    self: Any, hidden_states: Tensor, attention_mask: Tensor | None = None, position_ids: Tensor | None = None,
    past_key_values: Any = None, use_cache: bool | None = False,
    position_embeddings: tuple[Tensor, Tensor] | None = None, **kwargs: Any,
) -> Tensor:
    """``Qwen2DecoderLayer.forward`` with the q/k/v and gate/up projections fused (``FusedProjection``).

    hidden_states: [B, S, H]; returns the layer's output, [B, S, H]."""
    from transformers.models.qwen2.modeling_qwen2 import apply_rotary_pos_emb

    from engine.runtime import _grouped_attention_forward

    attention, mlp = self.self_attn, self.mlp
    batch, rows, _ = hidden_states.shape
    heads = (batch, rows, -1, attention.head_dim)

    # 1. Attention: one projection call for q, k and v; rotary; the cache; the kernel.
    residual = hidden_states
    query, key, value = attention.fused_qkv(_rms_norm(hidden_states, self.input_layernorm))
    query, key, value = (t.view(heads).transpose(1, 2) for t in (query, key, value))  # [B, heads, S, D]
    cos, sin = position_embeddings
    query, key = apply_rotary_pos_emb(query, key, cos, sin)
    if past_key_values is not None:
        key, value = past_key_values.update(key, value, attention.layer_idx)
    out, _ = _grouped_attention_forward(attention, query, key, value, attention_mask, scaling=attention.scaling,
                                        sliding_window=attention.sliding_window, **kwargs)
    hidden_states = residual + attention.o_proj(out.reshape(batch, rows, -1).contiguous())

    # 2. MLP: one projection call for gate and up.
    residual = hidden_states
    gate, up = mlp.fused_gate_up(_rms_norm(hidden_states, self.post_attention_layernorm))
    return residual + mlp.down_proj(mlp.act_fn(gate) * up)


def use_fused_layers(model: Any) -> int:
    """Give every Qwen2 decoder layer of ``model`` whose projections are ``Int8Linear`` the fused forward;
    returns how many layers changed. Others (fp32, oneDNN, a GPU) keep transformers' forward."""
    from transformers.models.qwen2.modeling_qwen2 import Qwen2DecoderLayer

    fused = 0
    for layer in model.modules():
        if isinstance(layer, Qwen2DecoderLayer) and _fusable(layer):
            attention, mlp = layer.self_attn, layer.mlp
            attention.fused_qkv = FusedProjection([attention.q_proj, attention.k_proj, attention.v_proj])
            mlp.fused_gate_up = FusedProjection([mlp.gate_proj, mlp.up_proj])
            layer.forward = fused_decoder_layer_forward.__get__(layer)
            fused += 1
    return fused


__all__ = ["FusedProjection", "concat_packed", "fused_decoder_layer_forward", "use_fused_layers"]
