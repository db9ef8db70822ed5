"""Every touch of transformers' KV-cache internals lives here (transformers 5.23).

Why one module: PIE edits the cache row by row, which depends on facts that
changed between transformers releases (``crop`` takes a *negative* count in
5.23; keys are stored *after* RoPE; ``position_ids`` default to
``arange(q) + cache length``). ``tests/test_kv.py`` fails if any of them changes.

Rows are tokens: row ``i`` of every layer holds the key/value of token ``i``,
computed at position ``i``. The functions below keep that invariant.

Tensors are never modified in place, so a list of a cache's layer tensors
(``snapshot``) stays valid after the cache changes, and restoring it is free.
The one exception is ``reserve``: a decode loop's private cache appends its
rows in place into spare room (``snapshot`` freezes it again).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

LayerKV = tuple[torch.Tensor, torch.Tensor]  # keys, values: [B, Hkv, S, D]


def new_cache(config: Any) -> DynamicCache:
    return DynamicCache(config=config)


def length(cache: DynamicCache) -> int:
    return cache.get_seq_length()


def snapshot(cache: DynamicCache) -> list[LayerKV]:
    """References to each layer's tensors; valid until someone writes in place (a reserved layer is frozen)."""
    for layer in cache.layers:
        if isinstance(layer, _ReservedLayer):
            layer.frozen = True
    return [(layer.keys, layer.values) for layer in cache.layers if layer.is_initialized]


def restore(cache: DynamicCache, saved: list[LayerKV]) -> None:
    assert len(saved) == len(cache.layers), (len(saved), len(cache.layers))
    for layer, (keys, values) in zip(cache.layers, saved):
        layer.keys, layer.values = keys, values


def from_snapshot(config: Any, saved: list[LayerKV]) -> DynamicCache:
    """A new cache holding ``saved`` (e.g. to fork a session's cache for one completion)."""
    cache = new_cache(config)
    for layer, (keys, values) in zip(cache.layers, saved):
        layer.lazy_initialization(keys, values)
        layer.keys, layer.values = keys, values
    return cache


class _ReservedLayer(DynamicLayer):
    """A layer whose rows are a prefix of a larger buffer: appending writes into the spare room.

    Why: ``DynamicLayer.update`` concatenates, copying every cached row for each
    new token (at a 4k context the 1.5B copies 470 MB per decode step). Writing in
    place is only safe while nobody else holds these tensors, hence ``reserve``
    is for a decode loop's own fork and ``snapshot`` sets ``frozen``.
    """

    key_room: torch.Tensor
    value_room: torch.Tensor
    frozen: bool = False

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        rows, new = self.get_seq_length(), key_states.shape[-2]
        in_room = (not self.frozen and self.keys.data_ptr() == self.key_room.data_ptr()
                   and self.values.data_ptr() == self.value_room.data_ptr() and rows + new <= self.key_room.shape[-2])
        if not in_room:  # room used up, tensors replaced (restore, PIE) or frozen: concatenate as usual
            return super().update(key_states, value_states, *args, **kwargs)
        self.key_room[..., rows : rows + new, :].copy_(key_states)
        self.value_room[..., rows : rows + new, :].copy_(value_states)
        self.keys, self.values = self.key_room[..., : rows + new, :], self.value_room[..., : rows + new, :]
        return self.keys, self.values


def reserve(cache: DynamicCache, extra_rows: int) -> None:
    """Give every layer room for ``extra_rows`` more rows, appended in place (one copy now, none per token).

    Only for a cache no one else references (a completion's fork after its first
    pass): later appends overwrite rows past a crop in place.
    """
    for index, layer in enumerate(cache.layers):
        if not layer.is_initialized or layer.keys.numel() == 0 or extra_rows <= 0:
            continue
        reserved = layer if isinstance(layer, _ReservedLayer) else _ReservedLayer()
        if reserved is not layer:
            reserved.__dict__.update(layer.__dict__)
        rows = layer.keys.shape[-2]
        shape = (*layer.keys.shape[:-2], rows + extra_rows, layer.keys.shape[-1])
        reserved.key_room = layer.keys.new_empty(shape)
        reserved.value_room = layer.values.new_empty((*shape[:-1], layer.values.shape[-1]))
        reserved.key_room[..., :rows, :].copy_(layer.keys)
        reserved.value_room[..., :rows, :].copy_(layer.values)
        reserved.keys, reserved.values = reserved.key_room[..., :rows, :], reserved.value_room[..., :rows, :]
        reserved.frozen = False
        cache.layers[index] = reserved


def crop_to(cache: DynamicCache, rows: int) -> None:
    """Keep the first ``rows`` rows (5.23: ``crop`` takes minus the number to drop)."""
    current = length(cache)
    assert 0 <= rows <= current, (rows, current)
    if rows < current:
        cache.crop(-(current - rows))


def rows(saved: list[LayerKV], start: int, end: int) -> list[LayerKV]:
    """Rows ``[start, end)`` of every layer (views, no copy)."""
    return [(k[..., start:end, :], v[..., start:end, :]) for k, v in saved]


def append_rows(
    cache: DynamicCache,
    block: list[LayerKV],
    transform_keys: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> None:
    """Append precomputed rows to every layer, optionally transforming keys (re-rotation)."""
    for layer, (keys, values) in zip(cache.layers, block):
        if keys.shape[-2] == 0:
            continue
        if transform_keys is not None:
            keys = transform_keys(keys)
        if not layer.is_initialized:
            layer.lazy_initialization(keys, values)
        layer.keys = torch.cat([layer.keys, keys], dim=-2)
        layer.values = torch.cat([layer.values, values], dim=-2)


@torch.inference_mode()
def encode(model: Any, cache: DynamicCache, ids: list[int], logits_to_keep: int = 1) -> torch.Tensor:
    """Encode ``ids`` after the cached rows, at positions ``len(cache) ...``; returns last logits.

    The new tokens attend to every cached row and causally to each other.
    """
    start = length(cache)
    device = next(model.parameters()).device
    input_ids = torch.tensor([ids], device=device)
    positions = torch.arange(start, start + len(ids), device=device)[None]
    out = model(input_ids=input_ids, past_key_values=cache, position_ids=positions, use_cache=True, logits_to_keep=logits_to_keep)
    assert length(cache) == start + len(ids), (length(cache), start, len(ids))
    return out.logits[0, -1]


@dataclass(frozen=True)
class RopeSpec:
    """What re-rotation needs to know about a model's keys."""

    inv_freq: torch.Tensor  # [D/2]
    head_dim: int


def rope_spec(model: Any) -> RopeSpec:
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    rotary = model.model.rotary_emb
    return RopeSpec(inv_freq=rotary.inv_freq.detach().float().cpu(), head_dim=head_dim)


def bytes_of(cache: DynamicCache) -> int:
    return sum(layer.keys.numel() * layer.keys.element_size() * 2 for layer in cache.layers if layer.is_initialized)


@torch.inference_mode()
def encode_chunked(model: Any, cache: DynamicCache, ids: list[int], chunk: int = 1024) -> torch.Tensor | None:
    """``encode`` in chunks: bounded attention memory for long documents (16k tokens would
    need ~14 GB of attention scores in one pass on the 0.5B). Returns the last logits."""
    logits = None
    for start in range(0, len(ids), chunk):
        logits = encode(model, cache, ids[start : start + chunk])
    return logits
