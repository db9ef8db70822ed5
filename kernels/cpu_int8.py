"""Int8 weights, fp32 activations: linear layers that read a quarter of fp32's bytes.

Why: on a CPU a decode step is bound by reading the weights (the 1.5B's fp32
weights are 6 GB per token). Storing them as int8 with one scale per 32 inputs
of each output channel and widening them to fp32 inside the multiply reads
1.125 bytes per weight instead of 4, and keeps the activations in fp32, so the
only error is the weights' rounding: at most half an int8 step, well inside the
4-6-bit grids the GGUF files were quantized to (Q5_0/Q8_0 in the 0.5B, Q4_K/Q6_K
in the 1.5B; the 0.5B's Q8_0 tensors round-trip exactly). Measured on real code:
98.5-99% of fp32's next-token argmaxes kept, perplexity unchanged (BENCHMARKS.md).

Activation quantization with one scale per tensor (torch's dynamic int8)
changed a fifth of the 1.5B's argmax choices in the same check. With one scale
per 32 inputs of a row instead, the grid the weights use, it keeps 98.8-99.5%
of them and the perplexity (``w8a8``, the ``"vnni"`` layout): on AVX512-VNNI
``vpdpbusd`` multiplies 64 int8 pairs per instruction, and on plain AVX2
``vpmaddubsw`` + ``vpmaddwd`` compute the same integer sums, so a speculative
pass over 8 rows is no longer bound by widening weights to fp32. Where the CPU
also has AMX-INT8, every batch runs on AMX tiles with the same integer
sums. Every variant gives each row the bits a 1-row step would: the linear
layers are batch-invariant.

The kernel (``int8_linear.c``, AVX2 + FMA + F16C, and AVX-512F, VNNI and AMX
variants used where the CPU has them; OpenMP through torch's own runtime) is
compiled once with the system C compiler into ``~/.cache/livefim/kernels``.
Batches of more than ``SMALL_BATCH`` rows (prefill) dequantize the weights a
slice at a time and use torch's sgemm, which is faster there, except for int8
activations on AMX or AVX2, whose kernels beat it at every size.
Without a compiler or AVX2, ``kernel_available()`` is False and callers keep fp32.

Layout, ``T = ceil(N / 16)`` tiles of 16 output channels:
``weights[T, K, 16]`` int8 and ``scales[T, K / 32, 16]`` fp16; the ``"vnni"``
layout holds the same codes as ``[T, K / 4, 16, 4]`` uint8 (code + 128).

Example::

    >>> layer = torch.nn.Linear(64, 20)
    >>> packed = pack_reference(layer.weight.detach())
    >>> x = torch.randn(3, 64)
    >>> bool(torch.allclose(linear_reference(x, packed, layer.bias), layer(x), atol=1e-2))
    True
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import threading
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from kernels.cbuild import load_c_library

log = logging.getLogger(__name__)

GROUP = 32  # inputs per scale
TILE = 16  # output channels per tile
SMALL_BATCH = 128  # rows up to which the int8 kernel beats dequantize + oneDNN sgemm (measured: crossover 128-256)
SLICE_BYTES = 64 << 20  # fp32 weight slice dequantized at a time for large batches
SOURCE = Path(__file__).with_name("int8_linear.c")


@dataclass(frozen=True)
class PackedInt8:
    """One weight matrix ``[out_features, in_features]`` in the kernel's tiled layout."""

    weights: Tensor  # [T, K, 16] int8; layout "vnni": [T, K/4, 16, 4] uint8, code + 128
    scales: Tensor  # [T, K/32, 16] float16
    out_features: int
    layout: str = "k16"

    @property
    def in_features(self) -> int:
        return int(self.weights.shape[1]) * (4 if self.layout == "vnni" else 1)


def pack_reference(weight: Tensor) -> PackedInt8:
    """Quantize ``weight [N, K]`` (K a multiple of 32): per 32 inputs of a channel, scale = max|w| / 127
    rounded to fp16, q = round(w / scale) (half to even). ``pack`` does the same in C.

    >>> w = torch.tensor([[0.5, -1.0] * 16])  # one group: max |w| = 1, scale = fp16(1/127)
    >>> p = pack_reference(w)
    >>> p.weights[0, :2, 0].tolist(), round(float(p.scales[0, 0, 0]) * 127, 3)
    ([64, -127], 1.0)
    """
    weight = weight.detach().float()
    n, k = weight.shape
    assert k % GROUP == 0, f"in_features must be a multiple of {GROUP}, got {k}"
    tiles = (n + TILE - 1) // TILE
    padded = torch.zeros(tiles * TILE, k, dtype=torch.float32)
    padded[:n] = weight
    groups = padded.reshape(tiles * TILE, k // GROUP, GROUP)  # [Np, G, 32]
    scales = (groups.abs().amax(-1) / 127).to(torch.float16)  # [Np, G]
    scales = torch.where(scales == 0, torch.ones_like(scales), scales)
    q = torch.round(groups / scales.float()[..., None]).clamp(-127, 127).to(torch.int8)
    weights = q.reshape(tiles, TILE, k).transpose(1, 2).contiguous()  # [T, K, 16]
    tiled_scales = scales.reshape(tiles, TILE, k // GROUP).transpose(1, 2).contiguous()  # [T, G, 16]
    return PackedInt8(weights, tiled_scales, n)


def to_vnni_reference(packed: PackedInt8) -> PackedInt8:
    """The ``"vnni"`` layout: per tile, 4 consecutive inputs of each channel side by side, as unsigned
    ``code + 128`` (what AVX512-VNNI's ``vpdpbusd`` multiplies). ``to_vnni`` does the same in C."""
    tiles, k, _ = packed.weights.shape
    codes = packed.weights.reshape(tiles, k // 4, 4, TILE).transpose(2, 3).to(torch.int16) + 128
    return PackedInt8(codes.to(torch.uint8).contiguous(), packed.scales, packed.out_features, "vnni")


def _codes_k16(packed: PackedInt8) -> Tensor:
    """``[T, K, 16]`` int8 codes, whatever the layout."""
    if packed.layout != "vnni":
        return packed.weights
    tiles, quads = packed.weights.shape[:2]
    return (packed.weights.to(torch.int16) - 128).to(torch.int8).transpose(2, 3).reshape(tiles, quads * 4, TILE)


def dequantize_reference(packed: PackedInt8) -> Tensor:
    """The fp32 weight ``[N, K]`` the kernel multiplies by (torch, the slow reference)."""
    codes = _codes_k16(packed)
    tiles, k, _ = codes.shape
    q = codes.transpose(1, 2).reshape(tiles * TILE, k // GROUP, GROUP).float()
    scales = packed.scales.transpose(1, 2).reshape(tiles * TILE, k // GROUP, 1).float()
    return (q * scales).reshape(tiles * TILE, k)[: packed.out_features]


def quantize_activations_reference(x: Tensor) -> Tensor:
    """``x [..., K]`` rounded to int8 per 32 inputs of a row, as the ``vnni`` and ``amx`` variants multiply it:
    scale = max|x| / 127 (1 for an all-zero group), code = round(x / scale) (half to even). Returns the
    dequantized fp32 values.

    >>> [round(v, 4) for v in quantize_activations_reference(torch.tensor([[0.5, -1.0] * 16]))[0, :2].tolist()]  # 64/127, -1
    [0.5039, -1.0]
    """
    groups = x.float().reshape(*x.shape[:-1], x.shape[-1] // GROUP, GROUP)
    scales = groups.abs().amax(-1, keepdim=True) / 127
    scales = torch.where(scales == 0, torch.ones_like(scales), scales)
    return (torch.round(groups / scales).clamp(-127, 127) * scales).reshape(x.shape)


def rounds_activations(packed: PackedInt8, rows: int, isa: str | None = None) -> bool:
    """Whether ``linear(..., isa=isa)`` multiplies int8-rounded activations for a batch of ``rows``: the
    ``"vnni"`` layout does for batches up to ``SMALL_BATCH`` on AVX512-VNNI, and for every batch on AMX and
    on AVX2 (a prefill included: there the int8 products beat dequantizing to fp32 for sgemm at every size,
    BENCHMARKS.md). ``isa`` defaults to ``int8_activation_isa(rows)``."""
    if packed.layout != "vnni":
        return False
    isa = isa if isa in INT8_ACTIVATION_ISAS else int8_activation_isa(rows)
    return rows <= SMALL_BATCH or isa in ("amx", "avx2")


def linear_reference(x: Tensor, packed: PackedInt8, bias: Tensor | None = None, isa: str | None = None) -> Tensor:
    """``x @ dequantize(w).T + bias`` in torch: what ``linear`` (same ``isa``) must equal up to summation
    order. Where ``rounds_activations``, it multiplies ``quantize_activations_reference(x)``."""
    x = x.float()
    if rounds_activations(packed, x.reshape(-1, x.shape[-1]).shape[0], isa):
        weight = dequantize_reference(packed).double()
        out = torch.nn.functional.linear(quantize_activations_reference(x).double(), weight, None if bias is None else bias.double())
        return out.float()
    return torch.nn.functional.linear(x, dequantize_reference(packed), None if bias is None else bias.float())


# -- the compiled kernel -----------------------------------------------------

_library: ctypes.CDLL | None = None
_library_error: str | None = None
_library_lock = threading.Lock()


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags (``avx2``, ``avx512f``, ...) from ``cpuinfo``; empty where it cannot be read."""
    try:
        line = next((line for line in cpuinfo.read_text().splitlines() if line.startswith("flags")), "")
    except OSError:
        return frozenset()
    return frozenset(line.split(":", 1)[1].split()) if ":" in line else frozenset()


def cpu_model_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """The CPU's model name from ``cpuinfo`` (``"AMD EPYC 7B13"``): "" where it names none, None where it cannot be read."""
    try:
        lines = cpuinfo.read_text().splitlines()
    except OSError:
        return None
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name") and ":" in line), "")


def _cpu_supports_kernel() -> bool:
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    return {"avx2", "fma", "f16c"} <= cpu_flags()


def available_isas() -> tuple[str, ...]:
    """Kernel variants (fp32 activations) this CPU runs, widest last: ``("avx2",)`` or ``("avx2", "avx512")``."""
    if not _cpu_supports_kernel():
        return ()
    return ("avx2", "avx512") if "avx512f" in cpu_flags() else ("avx2",)


_vnni: bool | None = None


def vnni_available() -> bool:
    """Whether this CPU runs the int8-activation variant (AVX-512F and AVX512-VNNI) and the kernel loads.
    Read once: ``linear`` asks on every call, and reading ``/proc/cpuinfo`` costs more than a small matmul."""
    global _vnni
    if _vnni is None:
        _vnni = _cpu_supports_kernel() and {"avx512f", "avx512_vnni"} <= cpu_flags() and kernel_available()
    return _vnni


INT8_ACTIVATION_ISAS = ("avx2", "vnni", "amx")  # the variants that multiply the "vnni" layout


def int8_activations_available() -> bool:
    """Whether the ``"vnni"`` layout (int8 weights times int8-rounded activations) runs here: on AVX512-VNNI,
    or on any CPU the kernel loads on through AVX2's ``vpmaddubsw``, with the same integer sums."""
    return kernel_available()


def int8_activation_isa(rows: int) -> str:
    """The variant ``linear`` runs the ``"vnni"`` layout on for a batch of ``rows``: AMX where it runs, else
    AVX512-VNNI where the CPU has it, else AVX2. All three give the same bits, so the choice is speed alone;
    ``rows`` no longer changes it: AMX won at every batch size, a decode step's one row included (the 1.5B's
    step 82.7 -> 79.7 ms on a Xeon, BENCHMARKS.md)."""
    if amx_available():
        return "amx"
    return "vnni" if vnni_available() else "avx2"


AMX_ENV = "LIVEFIM_INT8_AMX"
_amx_granted: bool | None = None


def amx_available() -> bool:
    """Whether int8-activation batches can run on AMX: the CPU has AMX-INT8 (Sapphire Rapids and
    later), the kernel loads, Linux grants this process the tile state, and ``$LIVEFIM_INT8_AMX`` is not ``0``."""
    global _amx_granted
    if os.environ.get(AMX_ENV, "1") == "0":
        return False
    if _amx_granted is None:
        _amx_granted = (vnni_available() and {"amx_tile", "amx_int8"} <= cpu_flags()
                        and load_library().livefim_amx_init() == 0)
    return _amx_granted


def default_isa() -> str:
    """The variant ``linear`` uses: the widest available, unless ``$LIVEFIM_INT8_ISA`` names another.

    Why a switch: the AVX-512 variant is new, and a user (or a benchmark) must be
    able to compare it with the AVX2 one on the same machine."""
    isas = available_isas()
    wanted = os.environ.get("LIVEFIM_INT8_ISA")
    if wanted:
        if wanted not in isas:
            raise RuntimeError(f"LIVEFIM_INT8_ISA={wanted!r}, but this CPU runs {', '.join(isas) or 'neither variant'}")
        return wanted
    return isas[-1] if isas else "avx2"


def load_library() -> ctypes.CDLL:
    """The compiled kernel, built on first use (a second or two) and cached by source hash."""
    global _library, _library_error
    with _library_lock:
        if _library is not None:
            return _library
        if _library_error is not None:
            raise RuntimeError(_library_error)
        try:
            if not _cpu_supports_kernel():
                raise RuntimeError("the int8 kernel needs an x86-64 CPU with AVX2, FMA and F16C")
            library = load_c_library(SOURCE)
        except (OSError, RuntimeError) as error:
            _library_error = f"int8 kernel unavailable: {error}"
            raise RuntimeError(_library_error) from error
        pointer, size = ctypes.c_void_p, ctypes.c_int64
        library.livefim_int8_linear.argtypes = [pointer, size, size, pointer, pointer, pointer, pointer, size]
        library.livefim_int8_linear.restype = ctypes.c_int
        library.livefim_int8_linear_avx512.argtypes = library.livefim_int8_linear.argtypes
        library.livefim_int8_linear_avx512.restype = ctypes.c_int
        library.livefim_int8_linear_vnni.argtypes = library.livefim_int8_linear.argtypes
        library.livefim_int8_linear_vnni.restype = ctypes.c_int
        library.livefim_int8_linear_amx.argtypes = library.livefim_int8_linear.argtypes
        library.livefim_int8_linear_amx.restype = ctypes.c_int
        library.livefim_int8_linear_w8a8_avx2.argtypes = library.livefim_int8_linear.argtypes
        library.livefim_int8_linear_w8a8_avx2.restype = ctypes.c_int
        library.livefim_amx_init.argtypes = []
        library.livefim_amx_init.restype = ctypes.c_int
        library.livefim_int8_to_vnni.argtypes = [pointer, size, size, pointer]
        library.livefim_int8_to_vnni.restype = ctypes.c_int
        library.livefim_int8_dequantize.argtypes = [pointer, pointer, size, size, size, pointer, ctypes.c_int]
        library.livefim_int8_dequantize.restype = ctypes.c_int
        library.livefim_int8_pack.argtypes = [pointer, size, size, pointer, pointer]
        library.livefim_int8_pack.restype = ctypes.c_int
        _library = library
        return library


def kernel_available() -> bool:
    """Whether the int8 kernel builds and loads here (the reason is logged once when not)."""
    try:
        load_library()
        return True
    except RuntimeError as error:
        log.info("%s", error)
        return False


def pack(weight: Tensor) -> PackedInt8:
    """``pack_reference`` through the compiled packer: the same bytes, ~30x faster (a 1.5B model in about
    a second instead of half a minute)."""
    library = load_library()
    weight = weight.detach().float().contiguous()
    n, k = weight.shape
    assert k % GROUP == 0, f"in_features must be a multiple of {GROUP}, got {k}"
    tiles = (n + TILE - 1) // TILE
    weights = torch.empty(tiles, k, TILE, dtype=torch.int8)
    scales = torch.empty(tiles, k // GROUP, TILE, dtype=torch.float16)
    status = library.livefim_int8_pack(weight.data_ptr(), n, k, weights.data_ptr(), scales.data_ptr())
    assert status == 0, f"int8 packer rejected K={k}"
    return PackedInt8(weights, scales, n)


def to_vnni(packed: PackedInt8) -> PackedInt8:
    """``to_vnni_reference`` through the compiled converter."""
    library = load_library()
    tiles, k, _ = packed.weights.shape
    out = torch.empty(tiles, k // 4, TILE, 4, dtype=torch.uint8)
    status = library.livefim_int8_to_vnni(packed.weights.contiguous().data_ptr(), tiles, k, out.data_ptr())
    assert status == 0, f"vnni converter rejected K={k}"
    return PackedInt8(out, packed.scales, packed.out_features, "vnni")


def linear(x: Tensor, packed: PackedInt8, bias: Tensor | None = None, isa: str | None = None) -> Tensor:
    """``x [..., K] @ w.T + bias`` through the kernel; fp32 in, fp32 out. The ``"vnni"`` layout rounds the
    activations of small batches to int8 (``linear_reference`` says exactly how) and runs batches of 2+
    rows on AMX where ``amx_available()`` (the same bits as ``isa="vnni"``, which forces AVX512-VNNI, and
    ``isa="avx2"``, which forces the AVX2 variant); for
    the ``"k16"`` layout ``isa`` picks the variant (``"avx2"`` or ``"avx512"``; default ``default_isa()``)."""
    library = load_library()
    k, n = packed.in_features, packed.out_features
    assert x.shape[-1] == k, f"x has {x.shape[-1]} features, the layer takes {k}"
    rows = x.reshape(-1, k).float().contiguous()
    m = rows.shape[0]
    if packed.layout == "vnni":
        isa = isa if isa in INT8_ACTIVATION_ISAS else int8_activation_isa(m)
        if isa == "amx" and not amx_available():  # the tile state is granted there; without it AMX faults
            raise RuntimeError(f"AMX is unavailable here (needs AMX-INT8, the kernel, Linux's grant; {AMX_ENV} not 0)")
        if isa == "vnni" and not vnni_available():  # an illegal instruction otherwise
            raise RuntimeError("the vnni variant needs AVX-512F and AVX512-VNNI, which this CPU lacks")
    else:
        isa = isa or _isa()
    bias32 = None if bias is None else bias.detach().float().contiguous()
    through_kernel = rounds_activations(packed, m, isa) if packed.layout == "vnni" else m <= SMALL_BATCH
    if through_kernel:  # else dequantize + sgemm
        out = torch.empty(m, n, dtype=torch.float32)
        kernel = {("k16", "avx512"): library.livefim_int8_linear_avx512,
                  ("vnni", "avx2"): library.livefim_int8_linear_w8a8_avx2,
                  ("vnni", "vnni"): library.livefim_int8_linear_vnni,
                  ("vnni", "amx"): library.livefim_int8_linear_amx}.get((packed.layout, isa), library.livefim_int8_linear)
        status = kernel(rows.data_ptr(), m, k, packed.weights.data_ptr(), packed.scales.data_ptr(),
                        None if bias32 is None else bias32.data_ptr(), out.data_ptr(), n)
        assert status == 0, f"int8 kernel rejected K={k}"
    else:
        out = _dequantized_matmul(library, rows, packed, bias32)
    return out.reshape(*x.shape[:-1], n)


def _dequantized_matmul(library: ctypes.CDLL, rows: Tensor, packed: PackedInt8, bias: Tensor | None) -> Tensor:
    """Large batches: fp32 slices of the weight, each multiplied through oneDNN (compute-bound, where it is fastest)."""
    k, n = packed.in_features, packed.out_features
    step = max(TILE, (SLICE_BYTES // (4 * k)) // TILE * TILE)
    weight = _scratch(min(step, n) * k).view(min(step, n), k)
    out = torch.empty(rows.shape[0], n, dtype=torch.float32) if step < n else None
    for n0 in range(0, n, step):
        n1 = min(n, n0 + step)
        status = library.livefim_int8_dequantize(packed.weights.data_ptr(), packed.scales.data_ptr(), k, n0, n1,
                                                 weight.data_ptr(), int(packed.layout == "vnni"))
        assert status == 0
        part = _sgemm(rows, weight[: n1 - n0], None if bias is None else bias[n0:n1])
        if out is None:
            return part
        out[:, n0:n1] = part
    assert out is not None
    return out


_chosen_isa: str | None = None


def _isa() -> str:
    global _chosen_isa
    if _chosen_isa is None:
        _chosen_isa = default_isa()
    return _chosen_isa


_scratch_local = threading.local()


def _scratch(numel: int) -> Tensor:
    """A reused fp32 buffer per thread: a fresh 55 MB allocation costs more in page faults than the dequantization."""
    buffer = getattr(_scratch_local, "buffer", None)
    if buffer is None or buffer.numel() < numel:
        buffer = torch.empty(numel, dtype=torch.float32)
        _scratch_local.buffer = buffer
    return buffer[:numel]


def _sgemm(rows: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``rows @ weight.T + bias``: oneDNN on a plain weight where torch has it (faster than MKL here), else torch."""
    if _ONEDNN_POINTWISE:
        return torch.ops.mkldnn._linear_pointwise(rows, weight, bias, "none", [], "")
    return torch.nn.functional.linear(rows, weight, bias)


_ONEDNN_POINTWISE = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


class Int8Linear(torch.nn.Module):
    """``nn.Linear`` (inference only) with int8 weights; the fp32 weight is dropped. ``int8_activations``
    stores the ``"vnni"`` layout, whose small batches multiply int8-rounded activations."""

    def __init__(self, layer: torch.nn.Linear, int8_activations: bool = False) -> None:
        super().__init__()
        self.in_features, self.out_features = layer.in_features, layer.out_features
        packed = pack(layer.weight)
        self.packed = to_vnni(packed) if int8_activations else packed
        self.bias = None if layer.bias is None else layer.bias.detach().float().clone()

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.packed, self.bias).to(x.dtype)

    def extra_repr(self) -> str:
        activations = "int8" if self.packed.layout == "vnni" else "fp32"
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"int8/{GROUP}, activations={activations}")


def use_int8_linears(model: torch.nn.Module, int8_activations: bool = False) -> int:
    """Replace every fp32 CPU ``nn.Linear`` whose inputs are a multiple of 32 by ``Int8Linear``; returns how many.

    A tied output layer gets its own int8 copy, so the input embedding stays fp32. ``int8_activations``
    needs ``int8_activations_available()``."""
    if int8_activations and not int8_activations_available():
        raise RuntimeError("int8 activations need the int8 kernel (x86-64 with AVX2 and a C compiler)")
    _isa()  # a bad $LIVEFIM_INT8_ISA fails here, at load, not in the middle of a forward
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if (isinstance(child, torch.nn.Linear) and child.weight.device.type == "cpu"
                    and child.weight.dtype == torch.float32 and child.in_features % GROUP == 0):
                setattr(parent, name, Int8Linear(child, int8_activations))
                swapped += 1
    return swapped
