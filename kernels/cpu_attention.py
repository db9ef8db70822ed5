"""Batch-invariant attention for decode steps and speculative verification on the CPU.

Why: a speculative pass must give each drafted row the logits a decode step would
give it, bit for bit, or greedy output can drift from plain decoding on a near-tie.
The linear layers are row-independent (``cpu_int8``), but SDPA's CPU kernel blocks
its work by the number of query rows, so row ``i`` of an 8-row pass differs in the
last bits from the same row alone; with int8-rounded activations (``w8a8``) that
difference sometimes becomes a whole rounding step and flips a token
(BENCHMARKS.md: 9 of 10 tasks identical). ``cpu_attention.c`` computes each
(key head, query row) on its own, in a fixed order, so row ``i`` of any pass equals
a 1-row call over the same keys. It takes SDPA's time for one row and 0.9-1.4x
SDPA's for nine (``livefim bench kernels``, BENCHMARKS.md); in the 1.5B's passes
it came out slightly ahead, as it reads each key head once for all its query heads.

Scope: fp32 tensors, one sequence, query rows that each see a prefix of the keys (a
decode step, or a causal pass over a cache); ``attention`` returns None for
anything else and the caller keeps SDPA. Needs AVX2 and FMA (an AVX-512F variant
runs where the CPU has it; each variant has its own fixed order, so their bits
differ, but no variant's rows depend on the batch) and a C compiler.

Where the CPU has AMX-BF16 (Xeon Sapphire Rapids and later), heads of a multiple
of 32 dimensions take tile products in bf16 (fp32 sums) instead: the fp32 sweeps
are bound by FMAs once a pass has several rows (a 9-row pass cost 1.6x a decode
step of the 1.5B at 8k keys, 1.3x with tiles), and the tiles leave a pass bound
by reading the cache, like one row. Where it has AVX512-BF16 but no AMX (AMD Zen 4
and 5), the same bf16 rounding runs on ``vdpbf16ps`` (a 9-row pass's attention 25%
faster on Zen 4; the 1.5B's 9-row pass at 4k keys 1.64x -> 1.44x a step). Rounding
to bf16 keeps 0.99 of the 0.5B's and 1.5B's next-token choices and their perplexity
within 0.2% (BENCHMARKS.md); ``$LIVEFIM_CPU_ATTENTION=avx512`` keeps fp32.

Example: 2 new rows over 3 cached ones, row 0 sees 4 keys and row 1 all 5::

    >>> q, k, v = torch.randn(1, 4, 2, 16), torch.randn(1, 2, 5, 16), torch.randn(1, 2, 5, 16)
    >>> mask = torch.ones(2, 5, dtype=torch.bool).tril(3)[None, None]
    >>> out = attention(q, k, v, mask)
    >>> out is None or bool(torch.allclose(out.transpose(1, 2), attention_reference(q, k, v, mask), atol=1e-5))
    True
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from pathlib import Path

import torch
from torch import Tensor

from kernels.cbuild import load_c_library
from kernels.cpu_int8 import cpu_flags

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("cpu_attention.c")
MAX_ROWS = 16  # query rows up to which a pass takes this kernel (a verification; longer passes are prefill)
ATTENTION_ENV = "LIVEFIM_CPU_ATTENTION"  # "torch" keeps SDPA everywhere, "avx2" forces that variant (to compare)

_library: ctypes.CDLL | None = None
_failed = False
_lock = threading.Lock()


def _load() -> ctypes.CDLL | None:
    global _library, _failed
    with _lock:
        if _library is None and not _failed:
            try:
                if not {"avx2", "fma"} <= cpu_flags():
                    raise RuntimeError("needs AVX2 and FMA")
                library = load_c_library(SOURCE)
                pointer, size = ctypes.c_void_p, ctypes.c_int64
                for function in (library.livefim_attention, library.livefim_attention_avx2, library.livefim_attention_bf16,
                                 library.livefim_attention_amx):
                    function.argtypes = [pointer, size, size, size, size, pointer, pointer, size, size, pointer,
                                         ctypes.c_float, pointer]
                    function.restype = ctypes.c_int
                library.livefim_attention_amx_init.argtypes = []
                library.livefim_attention_amx_init.restype = ctypes.c_int
                _library = library
            except (OSError, RuntimeError) as error:
                log.info("CPU attention kernel unavailable, SDPA serves: %s", error)
                _failed = True
        return _library


def available() -> bool:
    """Whether ``attention`` runs here (AVX2 and FMA, the kernel builds) and ``$LIVEFIM_CPU_ATTENTION`` is not ``torch``."""
    return os.environ.get(ATTENTION_ENV, "kernel") != "torch" and _load() is not None


_isas: tuple[str, ...] | None = None


def available_isas() -> tuple[str, ...]:
    """The variants this CPU runs, widest last: ``("avx2",)``, ``("avx2", "avx512")``, with AVX512-BF16
    ``("avx2", "avx512", "bf16")``, and with AMX-BF16 too, where Linux grants the tile state,
    ``("avx2", "avx512", "bf16", "amx")``; empty without the kernel. Read once (every layer of every step asks)."""
    global _isas
    if _isas is None:
        library, flags = _load(), cpu_flags()
        isas: tuple[str, ...] = ()
        if library is not None:
            isas = ("avx2", "avx512") if "avx512f" in flags else ("avx2",)
            if {"avx512f", "avx512bw", "avx512_bf16"} <= flags:
                isas += ("bf16",)
                if {"amx_tile", "amx_bf16"} <= flags and library.livefim_attention_amx_init() == 0:
                    isas += ("amx",)
        _isas = isas
    return _isas


def default_isa() -> str:
    """The variant ``attention`` uses: the widest, unless ``$LIVEFIM_CPU_ATTENTION`` names a narrower one
    (``avx2``, or ``avx512`` to keep fp32 where AMX or AVX512-BF16 would run bf16)."""
    isas = available_isas()
    wanted = os.environ.get(ATTENTION_ENV)
    if wanted in isas:
        return wanted
    return isas[-1] if isas else "avx2"


def prefix_lengths(mask: Tensor | None, q_len: int, kv_len: int) -> Tensor | None:
    """How many keys each query row sees, when every row sees a prefix of them (else None).

    ``mask``: None (one row: it sees every key) or boolean ``[1, 1, Q, S]``.

    >>> prefix_lengths(torch.ones(3, 6, dtype=torch.bool).tril(3)[None, None], 3, 6).tolist()
    [4, 5, 6]
    """
    if mask is None:
        return torch.full((1,), kv_len, dtype=torch.int64) if q_len == 1 else None
    if mask.dtype != torch.bool or mask.dim() != 4 or mask.shape[0] != 1 or mask.shape[1] != 1:
        return None
    rows = mask[0, 0]
    lengths = rows.sum(-1, dtype=torch.int64)
    prefix = torch.arange(kv_len)[None, :] < lengths[:, None]
    return lengths.contiguous() if bool((lengths > 0).all()) and torch.equal(rows, prefix) else None


def attention(query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None, scale: float | None = None,
              isa: str | None = None) -> Tensor | None:
    """``query [1, H, Q, D]`` over ``key, value [1, Hkv, S, D]`` -> ``[1, Q, H, D]`` (the layout the model's
    output projection takes), or None where this kernel does not apply (then use SDPA). ``isa`` picks the
    variant (one of ``available_isas()``; default ``default_isa()``)."""
    batch, heads, q_len, head_dim = query.shape
    kv_heads, kv_len = key.shape[1], key.shape[2]
    if (batch != 1 or q_len > MAX_ROWS or query.dtype != torch.float32 or key.dtype != torch.float32
            or value.dtype != torch.float32 or query.device.type != "cpu" or heads % kv_heads
            or heads // kv_heads > 8 or head_dim % 16 or head_dim > 256 or not available()):
        return None
    lengths = _lengths_of(mask, q_len, kv_len)
    if lengths is None or not (_rows_packed(key) and _rows_packed(value) and key.stride(1) == value.stride(1)):
        return None
    library = _load()
    assert library is not None
    isa = isa or default_isa()
    if isa not in available_isas():
        raise RuntimeError(f"the {isa} attention variant does not run on this CPU ({', '.join(available_isas())} do)")
    if isa in ("amx", "bf16") and head_dim % 32:
        isa = "avx512"  # bf16 products take 32 dimensions at a time; a model's head size is fixed, so its rows stay alike
    kernel = {"avx512": library.livefim_attention, "bf16": library.livefim_attention_bf16,
              "amx": library.livefim_attention_amx}.get(isa, library.livefim_attention_avx2)
    rows = query[0].transpose(0, 1).contiguous()  # [Q, H, D]
    out = torch.empty(1, q_len, heads, head_dim, dtype=torch.float32)
    status = kernel(
        rows.data_ptr(), q_len, kv_heads, heads // kv_heads, head_dim, key.data_ptr(), value.data_ptr(),
        key.stride(1), kv_len, lengths.data_ptr(), head_dim ** -0.5 if scale is None else scale, out.data_ptr())
    assert status == 0, f"CPU attention rejected Q={q_len} S={kv_len} D={head_dim} (status {status})"
    return out


_memo = threading.local()


def _lengths_of(mask: Tensor | None, q_len: int, kv_len: int) -> Tensor | None:
    """``prefix_lengths``, read once per mask: a forward hands every layer the same mask tensor, and reading
    it costs ~27 us of small torch ops, 28 times a pass. The memo holds the mask itself, so an equal address
    cannot be a different, newer mask, and its version counter, so an in-place change is read again
    (inference-mode tensors have none: transformers builds each forward's mask afresh and never edits it)."""
    if mask is None:
        return prefix_lengths(None, q_len, kv_len)
    version = None if mask.is_inference() else mask._version
    seen = getattr(_memo, "entry", None)
    if seen is not None and seen[0] is mask and seen[1] == version:
        return seen[2]
    lengths = prefix_lengths(mask, q_len, kv_len)
    _memo.entry = (mask, version, lengths)
    return lengths


def _rows_packed(tensor: Tensor) -> bool:
    """Each head's rows are contiguous D-float rows (a prefix of a reserved buffer qualifies)."""
    return tensor.stride(3) == 1 and tensor.stride(2) == tensor.shape[3]


def attention_reference(query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None, scale: float | None = None) -> Tensor:
    """What ``attention`` computes, ``[1, H, Q, D]``, in float64 torch: repeat the key heads, then softmax."""
    rep = query.shape[1] // key.shape[1]
    key = key.double().repeat_interleave(rep, dim=1)
    value = value.double().repeat_interleave(rep, dim=1)
    scores = query.double() @ key.transpose(-1, -2) * (query.shape[-1] ** -0.5 if scale is None else scale)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return (scores.softmax(-1) @ value).float()


__all__ = ["ATTENTION_ENV", "MAX_ROWS", "attention", "attention_reference", "available", "available_isas", "default_isa",
           "prefix_lengths"]
