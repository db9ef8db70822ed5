"""Linear layers through oneDNN on CPU: the decode step's matmuls, about twice as fast.

Why: a decode step multiplies a handful of rows by every weight matrix, and
torch's default CPU path for that (MKL's sgemm) is slow on this machine's AMD
EPYC: measured here, a 1536→8960 projection takes 3.6 ms for one row and 7.6 ms
for two, while oneDNN takes 1.7 and 2.1. On the whole 1.5B at a 2k context one
token's forward drops from 583 to 271 ms and an 8-token verification pass from
1194 to 614 ms (``livefim bench model --cpu-linear torch,onednn`` measures it).
Results differ from torch's only by summation order (logits within ~1e-4).

The weights are converted once into oneDNN's blocked layout; inputs are
converted per call (cheap next to the weights). A tied ``lm_head`` gets its own
copy, so the input embedding stays a plain tensor.

Example::

    >>> layer = torch.nn.Linear(8, 4)
    >>> fast = OneDnnLinear(layer)
    >>> x = torch.randn(2, 3, 8)
    >>> bool(torch.allclose(fast(x), layer(x), atol=1e-5))
    True
"""

from __future__ import annotations

import logging
import os

import torch

log = logging.getLogger(__name__)

CPU_LINEAR_ENV = "LIVEFIM_CPU_LINEAR"
CPU_LINEAR_CHOICES = ("w8a8", "int8", "onednn", "torch")


def onednn_available() -> bool:
    return bool(torch.backends.mkldnn.is_available())


def default_cpu_linear() -> str:
    """``$LIVEFIM_CPU_LINEAR`` when set; else ``w8a8`` wherever the int8 kernel loads (x86-64 with AVX2
    and a C compiler: ``kernels/cpu_int8.py``), ``int8`` weights alone where ``$LIVEFIM_CPU_LINEAR=int8``
    asks. ``use_cpu_linears`` falls back to oneDNN, then torch, where a path is unavailable.

    Why w8a8: the same next-token predictions as int8 weights alone (99%, BENCHMARKS.md), faster decode
    steps, much cheaper speculative passes and prefill (AVX2: a 9-row pass 1.6x, prefill 1.5x), and, with
    the batch-invariant attention, a verification pass scores each row with exactly the bits a decode step
    would, so speculative output is byte-identical to plain decoding by construction (the fp32-activation
    kernel sums a batch in another order than one row)."""
    chosen = os.environ.get(CPU_LINEAR_ENV, "").strip().lower()
    if chosen:
        if chosen not in CPU_LINEAR_CHOICES:
            raise ValueError(f"{CPU_LINEAR_ENV} must be one of {', '.join(CPU_LINEAR_CHOICES)}, got {chosen!r}")
        return chosen
    from kernels.cpu_int8 import int8_activations_available

    return "w8a8" if int8_activations_available() else "int8"


def use_cpu_linears(model: torch.nn.Module, choice: str) -> str:
    """Put a CPU model's linear layers on the ``choice`` path; returns the path actually used.

    ``w8a8`` (int8 weights and int8-rounded activations) and ``int8`` need the
    compiled kernel (x86-64 with AVX2 and a C compiler), ``onednn`` a torch built
    with it; each falls back to the next path that runs, logged.
    """
    if choice not in CPU_LINEAR_CHOICES:
        raise ValueError(f"cpu_linear must be one of {', '.join(CPU_LINEAR_CHOICES)}, got {choice!r}")
    if choice == "w8a8":
        from kernels.cpu_int8 import int8_activations_available, use_int8_linears

        if int8_activations_available():
            use_int8_linears(model, int8_activations=True)
            return "w8a8"
        log.warning("int8 CPU kernel unavailable (see the log above); using oneDNN fp32")
        choice = "onednn"
    if choice == "int8":
        from kernels.cpu_int8 import kernel_available, use_int8_linears

        if kernel_available():
            use_int8_linears(model)
            return "int8"
        log.warning("int8 CPU kernel unavailable (see the log above); using oneDNN fp32")
        choice = "onednn"
    if choice == "onednn" and onednn_available():
        use_onednn_linears(model)
        return "onednn"
    return "torch"


class OneDnnLinear(torch.nn.Module):
    """``nn.Linear`` (fp32, inference only) with its weight in oneDNN's layout."""

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach().float().contiguous()
        self.packed_weight = weight.to_mkldnn()
        self.packed_bias = None if linear.bias is None else linear.bias.detach().float().contiguous().to_mkldnn()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features).float().contiguous().to_mkldnn()
        y = torch._C._nn.mkldnn_linear(rows, self.packed_weight, self.packed_bias).to_dense()
        return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.packed_bias is not None}"


def use_onednn_linears(model: torch.nn.Module) -> int:
    """Replace every fp32 ``nn.Linear`` of a CPU model by ``OneDnnLinear``; returns how many."""
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.Linear) and child.weight.device.type == "cpu" and child.weight.dtype == torch.float32:
                setattr(parent, name, OneDnnLinear(child))
                swapped += 1
    return swapped
