"""Int8-weight linear layers against their torch reference, and the real model's quality under them."""

from __future__ import annotations

import pytest
import torch
from transformers import Qwen2ForCausalLM

from engine.runtime import load_model
from evals.bench_model import stdlib_code_tokens
from kernels import cpu_int8
from kernels.cpu_int8 import Int8Linear, kernel_available, linear, linear_reference, pack, pack_reference, use_int8_linears
from kernels.cpu_linear import use_cpu_linears

pytestmark = pytest.mark.skipif(not kernel_available(), reason="int8 kernel needs x86-64 with AVX2 and a C compiler")


def _weights(n: int, k: int, seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)
    w = torch.randn(n, k) * 0.05
    w[0, :32] = 0.0  # an all-zero group: scale 1, codes 0
    w[1, 5] = 3.0  # an outlier sets its group's scale alone
    return w


@pytest.mark.parametrize("n,k", [(20, 64), (16, 32), (100, 96), (513, 128)])
def test_compiled_packer_writes_the_reference_bytes(n, k):
    expected, got = pack_reference(_weights(n, k)), pack(_weights(n, k))
    assert torch.equal(got.weights, expected.weights)
    assert torch.equal(got.scales.view(torch.int16), expected.scales.view(torch.int16))
    assert got.out_features == expected.out_features == n


def test_quantization_error_is_at_most_half_a_step():
    w = _weights(40, 64)
    packed = pack_reference(w)
    error = (cpu_int8.dequantize_reference(packed) - w).abs()
    step = w.reshape(40, 2, 32).abs().amax(-1, keepdim=True) / 127  # per group, before fp16 rounding
    assert torch.all(error.reshape(40, 2, 32) <= step * 0.5 * 1.002 + 1e-12)
    assert float(error[0, :32].max()) == 0.0


INT8_ACTIVATION_ISAS = (("avx2",) if cpu_int8.kernel_available() else ()) + (("vnni",) if cpu_int8.vnni_available() else ()) \
    + (("amx",) if cpu_int8.amx_available() else ())
VARIANTS = [("k16", isa) for isa in cpu_int8.available_isas()] + [("vnni", isa) for isa in INT8_ACTIVATION_ISAS]


@pytest.mark.parametrize("layout,isa", VARIANTS, ids=[f"{layout}-{isa}" for layout, isa in VARIANTS])
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 6, 7, 8, 9, 17, 128, 129, 300])
@pytest.mark.parametrize("bias", [True, False])
def test_kernel_equals_reference_for_every_batch_size(rows, bias, layout, isa):
    # every unrolled row block of each variant (AVX2: 1-4, AVX-512: 1-8, VNNI: 1-9), several blocks up to 128 rows,
    # 129+ the dequantize + sgemm path; 70 channels leave a partial last tile
    # (the "vnni" layout on AVX2, AVX512-VNNI and AMX: int8 activations, held to the reference that rounds them the same way)
    n, k = 70, 96
    packed = pack(_weights(n, k))
    if layout == "vnni":
        packed = cpu_int8.to_vnni(packed)
    b = torch.randn(n) if bias else None
    x = torch.randn(rows, k)
    x[0, 32:64] = 0.0  # an all-zero activation group
    expected = linear_reference(x, packed, b, isa=isa)  # AMX rounds the activations of any batch
    assert torch.allclose(linear(x, packed, b, isa=isa), expected, atol=1e-4, rtol=1e-5)


def test_avx2_int8_activation_rows_do_not_depend_on_the_batch():
    # the AVX2 int8-activation variant (every x86-64 CPU the kernel loads on): a verification pass scores
    # each row with the bits of a one-row step; activations near +-127 steps test that nothing saturates
    packed = cpu_int8.to_vnni(pack(_weights(70, 96)))
    x = torch.randn(11, 96)
    x[3, :32] = torch.tensor([1.0, -1.0] * 16)  # every code +-127 in one group
    together = linear(x, packed, isa="avx2")
    alone = torch.cat([linear(x[i : i + 1], packed, isa="avx2") for i in range(11)])
    assert torch.equal(together, alone)
    assert torch.allclose(together, linear_reference(x, packed), atol=1e-4, rtol=1e-5)


@pytest.mark.skipif(not cpu_int8.vnni_available(), reason="needs AVX512-VNNI")
@pytest.mark.parametrize("rows", [1, 3, 8, 11])
def test_avx2_int8_activations_give_the_vnni_bits(rows):
    packed = cpu_int8.to_vnni(pack(_weights(300, 1024)))
    x, b = torch.randn(rows, 1024), torch.randn(300)
    assert torch.equal(linear(x, packed, b, isa="avx2"), linear(x, packed, b, isa="vnni"))


@pytest.mark.parametrize("n,k", [(20, 64), (100, 96), (513, 128)])
def test_vnni_layout_is_the_reference_layout_and_round_trips(n, k):
    packed = pack(_weights(n, k))
    converted, expected = cpu_int8.to_vnni(packed), cpu_int8.to_vnni_reference(packed)
    assert converted.layout == "vnni" and converted.in_features == k
    assert torch.equal(converted.weights, expected.weights)
    assert torch.equal(cpu_int8.dequantize_reference(converted), cpu_int8.dequantize_reference(packed))


@pytest.mark.skipif(not cpu_int8.vnni_available(), reason="needs AVX512-VNNI")
def test_vnni_rows_do_not_depend_on_the_batch():
    # a speculative pass must score each drafted token exactly as a one-token step would (the default
    # path: AMX for the batch where the CPU has it, AVX512-VNNI for one row)
    packed = cpu_int8.to_vnni(pack(_weights(70, 96)))
    x = torch.randn(11, 96)
    together = linear(x, packed)
    alone = torch.cat([linear(x[i : i + 1], packed, isa="vnni") for i in range(11)])
    assert torch.equal(together, alone)


@pytest.mark.skipif(not cpu_int8.amx_available(), reason="needs AMX-INT8 (and Linux granting the tile state)")
@pytest.mark.parametrize("rows", [1, 2, 5, 8, 16, 17, 40])
@pytest.mark.parametrize("n,k", [(70, 96), (300, 1024)])
def test_amx_gives_the_vnni_bits_for_every_batch(rows, n, k):
    # full 16-row tiles, a partial last block (17, 40) read from zero-padded rows, a partial last channel tile
    packed = cpu_int8.to_vnni(pack(_weights(n, k)))
    x, b = torch.randn(rows, k), torch.randn(n)
    assert torch.equal(linear(x, packed, b, isa="amx"), linear(x, packed, b, isa="vnni"))


def test_amx_can_be_switched_off(monkeypatch):
    monkeypatch.setenv(cpu_int8.AMX_ENV, "0")
    assert not cpu_int8.amx_available()


def test_a_variant_the_cpu_lacks_is_refused_by_name(monkeypatch):
    monkeypatch.setattr(cpu_int8, "available_isas", lambda: ("avx2",))
    monkeypatch.setenv("LIVEFIM_INT8_ISA", "avx512")
    with pytest.raises(RuntimeError, match="LIVEFIM_INT8_ISA='avx512'"):
        cpu_int8.default_isa()
    monkeypatch.setenv("LIVEFIM_INT8_ISA", "avx2")
    assert cpu_int8.default_isa() == "avx2"


def test_large_batches_split_a_big_weight_into_slices(monkeypatch):
    monkeypatch.setattr(cpu_int8, "SLICE_BYTES", 64 * 4 * 40)  # 40 channels a slice: 3 slices for 100
    packed = pack(_weights(100, 64))
    x = torch.randn(200, 64)
    assert torch.allclose(linear(x, packed), linear_reference(x, packed), atol=1e-4)


def test_batched_shapes_and_dtype_pass_through():
    layer = torch.nn.Linear(64, 24)
    fast = Int8Linear(layer)
    x = torch.randn(2, 3, 64)
    out = fast(x)
    assert out.shape == (2, 3, 24) and out.dtype == torch.float32
    assert torch.allclose(out, linear_reference(x, fast.packed, layer.bias), atol=1e-5)


def test_swapped_tiny_model_matches_its_dequantized_twin(tiny_model, tokenizer):
    config = tiny_model.model.config
    fast, twin = Qwen2ForCausalLM(config).eval(), Qwen2ForCausalLM(config).eval()
    fast.load_state_dict(tiny_model.model.state_dict())
    twin.load_state_dict(tiny_model.model.state_dict())
    assert use_int8_linears(fast) == 2 * 7 + 1  # q, k, v, o, gate, up, down per layer, and the head
    for name, module in twin.named_modules():  # the reference: fp32 layers holding the int8-rounded weights
        if isinstance(module, torch.nn.Linear):
            module.weight.data = cpu_int8.dequantize_reference(pack_reference(module.weight))
    ids = torch.tensor([tokenizer("def add(a, b):\n    return a + b\n").input_ids])
    with torch.inference_mode():
        assert torch.allclose(fast(ids).logits, twin(ids).logits, atol=1e-4)


def test_an_unavailable_kernel_falls_back_to_fp32(monkeypatch, tiny_model):
    monkeypatch.setattr("kernels.cpu_int8.kernel_available", lambda: False)
    model = Qwen2ForCausalLM(tiny_model.model.config).eval()
    assert use_cpu_linears(model, "int8") in ("onednn", "torch")
    assert not any(isinstance(m, Int8Linear) for m in model.modules())


def _assert_keeps_fp32_predictions(tokenizer, cpu_linear: str) -> None:
    """The 0.5B on 600 tokens of real code through ``cpu_linear``: >= 97% of fp32's next-token argmaxes, and
    its perplexity within 0.02 nats."""
    fp32 = load_model("qwen2.5-coder-0.5b", "cpu", cpu_linear="onednn")
    fast = load_model("qwen2.5-coder-0.5b", "cpu", cpu_linear=cpu_linear)
    assert fast.cpu_linear == cpu_linear and fp32.cpu_linear == "onednn"
    ids = torch.tensor([stdlib_code_tokens(tokenizer, 2600)[2000:2600]])
    with torch.inference_mode():
        ref, got = fp32.model(ids).logits[0].float(), fast.model(ids).logits[0].float()
    agreement = float((ref.argmax(-1) == got.argmax(-1)).float().mean())
    nll = lambda logits: float(torch.nn.functional.cross_entropy(logits[:-1], ids[0, 1:]))  # noqa: E731
    assert agreement >= 0.97, agreement
    assert abs(nll(got) - nll(ref)) < 0.02, (nll(got), nll(ref))


@pytest.mark.real_model
def test_real_model_keeps_its_predictions_under_int8_weights(tokenizer):
    """int8 weights, fp32 activations (measured 0.985-0.995 and 1.5123 -> 1.5116 nats on this text)."""
    _assert_keeps_fp32_predictions(tokenizer, "int8")


@pytest.mark.real_model
def test_real_model_keeps_its_predictions_under_int8_activations(tokenizer, monkeypatch):
    """int8 weights and int8-rounded activations (``w8a8``), every row through the kernel as decode steps and
    speculative passes run (measured 0.995 and 1.5123 -> 1.5109; torch's per-tensor dynamic int8 kept 0.80
    of the 1.5B's argmaxes). On a CPU without AVX512-VNNI the AVX2 variant computes the same integer sums."""
    monkeypatch.setattr(cpu_int8, "SMALL_BATCH", 10_000)  # not the prefill path: that multiplies fp32 activations
    _assert_keeps_fp32_predictions(tokenizer, "w8a8")
