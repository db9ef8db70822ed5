"""Patch a KV cache after a token-level edit: PIE, or prefix re-encoding.

Why: re-encoding a 4k-token file costs 25-100 s on a CPU; an edit touches a
few tokens. Positional Integrity Encoding (PIE) keeps every unchanged row,
encodes only the new tokens (attending to the cached text before them), and
re-rotates the keys of moved rows by their shift δ so their positions are
right again. Values need no change.

Worked example (rows = tokens, header rows first)::

    old:  H H a b c d e        patch: keep [0,2) "a b", new ["X"], keep [3,5) "d e"
    new:  H H a b X d e        "c" (old 2) replaced by "X": δ = 0 for "d e"
    new:  H H a b X Y d e      "c" -> "X Y": "d e" move by δ = +1, keys re-rotated

``prefix`` mode keeps rows only up to the first change and re-encodes the
rest: exact, but costs O(rest of file). PIE is approximate beyond layer 0
(rows after an edit never saw the new text); ``refresh_window`` re-encodes
that many rows right after each new run, where staleness matters most.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Sequence

import torch

from cache import kv
from cache.tokens import KeptRun, NewRun, TokenPatch
from kernels import rerotate
from kernels.rope import rerotate_with_table, rotation_table

PatchMode = Literal["pie", "prefix"]


@dataclass(frozen=True)
class PatchStats:
    encoded_tokens: int  # tokens run through the model
    rotated_rows: int  # rows kept with a non-zero shift
    kept_rows: int  # rows kept (rotated or not) after the first change
    first_stale_row: int | None  # new index (without header) of the first kept row after a change


def shift_keys(rope: kv.RopeSpec, delta: int):
    """A key transform moving rows by ``delta`` positions (the same block shape on every layer).

    One shift for all rows: on CUDA the fused kernel gets a deltas vector; elsewhere
    cos/sin of the one angle are computed once and broadcast over rows and layers."""
    made: dict[tuple[int, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}

    def transform(keys: torch.Tensor) -> torch.Tensor:
        # keys: [B, Hkv, S, D]; tables are built once per patch run, not once per layer
        if keys.is_cuda:
            key = (keys.shape[-2], keys.device)
            if key not in made:
                made[key] = (torch.full((keys.shape[-2],), delta, dtype=torch.int64, device=keys.device),
                             rope.inv_freq.to(keys.device))
            return rerotate(keys, *made[key])
        key = (1, keys.device)
        if key not in made:
            made[key] = rotation_table(torch.tensor([delta], dtype=torch.int64, device=keys.device), rope.inv_freq.to(keys.device))
        return rerotate_with_table(keys, *made[key])

    return transform


@torch.inference_mode()
def apply_patch(
    model: Any,
    cache: Any,
    patch: TokenPatch,
    old_ids: Sequence[int],
    rope: kv.RopeSpec,
    *,
    header_rows: int = 0,
    mode: PatchMode = "pie",
    refresh_window: int = 0,
) -> PatchStats:
    """Turn a cache of ``header + old tokens`` into one of ``header + new tokens``."""
    assert kv.length(cache) == header_rows + len(old_ids), (kv.length(cache), header_rows, len(old_ids))
    saved = kv.snapshot(cache)
    runs = list(patch.runs)
    # 1. Rows before the first change stay as they are.
    new_pos = 0
    while runs and isinstance(runs[0], KeptRun) and runs[0].old_start == new_pos:
        new_pos += runs[0].old_end - runs[0].old_start
        runs.pop(0)
    kv.crop_to(cache, header_rows + new_pos)

    pending: list[int] = []
    encoded = rotated = kept = 0
    first_stale: int | None = None

    def flush() -> None:
        nonlocal encoded
        if pending:
            kv.encode_chunked(model, cache, pending)
            encoded += len(pending)
            pending.clear()

    # 2. Walk the new sequence: encode new tokens, re-rotate kept rows.
    for run in runs:
        if isinstance(run, NewRun):
            pending.extend(run.ids)
            new_pos += len(run.ids)
            continue
        assert isinstance(run, KeptRun), run
        start, end = run.old_start, run.old_end
        if mode == "prefix":
            pending.extend(old_ids[start:end])
            new_pos += end - start
            continue
        # every kept run here follows a change (insert or delete): refresh its head
        refresh = min(refresh_window, end - start)
        if refresh:
            pending.extend(old_ids[start : start + refresh])
            new_pos += refresh
            start += refresh
        flush()
        if start == end:
            continue
        delta = new_pos - start
        block = kv.rows(saved, header_rows + start, header_rows + end)
        kv.append_rows(cache, block, shift_keys(rope, delta) if delta else None)
        first_stale = new_pos if first_stale is None else first_stale
        kept += end - start
        rotated += (end - start) if delta else 0
        new_pos += end - start
    flush()
    assert kv.length(cache) == header_rows + new_pos, (kv.length(cache), header_rows, new_pos)
    return PatchStats(encoded_tokens=encoded, rotated_rows=rotated, kept_rows=kept, first_stale_row=first_stale)


@torch.inference_mode()
def reencode_from(model: Any, cache: Any, ids: Sequence[int], start: int, *, header_rows: int = 0, end: int | None = None) -> int:
    """Re-encode tokens ``[start, end)`` exactly, keeping rows after ``end`` as they are.

    Used to refresh stale rows (``end=None``: to the end of the document).
    Returns the number of tokens encoded.
    """
    end = len(ids) if end is None else end
    saved = kv.snapshot(cache)
    total = kv.length(cache)
    kv.crop_to(cache, header_rows + start)
    if end > start:
        kv.encode_chunked(model, cache, list(ids[start:end]))
    kv.append_rows(cache, kv.rows(saved, header_rows + end, total))
    return end - start
