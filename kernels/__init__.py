"""Tensor kernels for livefim: pure functions over tensors, no imports from engine/cache/context.

`rerotate` moves cached RoPE keys to new positions after an edit (PIE).
"""

from kernels.dispatch import rerotate, triton_available
from kernels.rope import rerotate_keys, rerotate_keys_reference, rope_inv_freq

__all__ = ["rerotate", "rerotate_keys", "rerotate_keys_reference", "rope_inv_freq", "triton_available"]
