"""Pick the fastest available re-rotation: the fused Triton kernel on CUDA, torch elsewhere.

Callers (the cache patch path) call `rerotate` and never import triton
themselves: CPU-only installs have no triton, and the kernel only pays off on
a GPU (under TRITON_INTERPRET=1 it is a slow simulator).
"""

from __future__ import annotations

import functools

from torch import Tensor

from kernels.rope import rerotate_keys


@functools.cache
def triton_available() -> bool:
    """True when `kernels.rope_triton` imports (triton installed and usable)."""
    try:
        import kernels.rope_triton  # noqa: F401
    except Exception:  # ImportError, or a triton that fails to initialise its backend
        return False
    return True


def rerotate(keys: Tensor, deltas: Tensor, inv_freq: Tensor, out: Tensor | None = None) -> Tensor:
    """Move row s of keys [B, H, S, D] from RoPE position p to p + deltas[s]; see `kernels.rope`.

    `out` may be `keys` itself (in-place patch of a cache slice). Uses Triton
    when keys are on CUDA and triton imports, else `rerotate_keys`.
    """
    if keys.is_cuda and triton_available():
        from kernels.rope_triton import rerotate_keys_triton

        return rerotate_keys_triton(keys, deltas, inv_freq, out=out)
    return rerotate_keys(keys, deltas, inv_freq, out=out)
