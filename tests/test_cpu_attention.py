"""The batch-invariant CPU attention kernel against torch, and a verification pass against decode steps."""

from __future__ import annotations

import pytest
import torch

from cache import kv
from engine.runtime import build_tiny_random_model
from kernels import cpu_attention, cpu_int8
from kernels.cpu_attention import attention, attention_reference, prefix_lengths

needs_kernel = pytest.mark.skipif(not cpu_attention.available(), reason="the CPU attention kernel needs AVX2, FMA and cc")
ISAS = cpu_attention.available_isas()
BF16_ISAS = ("bf16", "amx")
# The fp32 variants sum in their own order (a few ulp); the bf16 ones (AVX512-BF16, AMX) round queries, keys,
# weights and values to bf16 (8 bits of mantissa), so their outputs, weighted means of values ~N(0, 1), are off
# by up to ~1% of a value.
MAX_ERROR = {"bf16": 2e-2, "amx": 2e-2}
MEAN_ERROR = {"bf16": 2e-3, "amx": 2e-3}


def _cache_like(heads: int, length: int, dim: int, room: int = 37) -> torch.Tensor:
    """``[1, heads, length, dim]`` as a prefix of a larger reserved buffer, the way a decode loop holds it."""
    return torch.randn(1, heads, length + room, dim)[:, :, :length]


def _causal(q_len: int, kv_len: int) -> torch.Tensor:
    return torch.ones(q_len, kv_len, dtype=torch.bool).tril(kv_len - q_len)[None, None]


@needs_kernel
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("heads,kv_heads,dim", [(12, 2, 128), (14, 2, 64), (4, 2, 16), (8, 8, 32), (16, 2, 256)])
@pytest.mark.parametrize("q_len,kv_len", [(1, 1), (1, 300), (3, 17), (8, 1000), (16, 16), (2, 9)])
def test_kernel_equals_the_float64_reference(heads, kv_heads, dim, q_len, kv_len, isa):
    # 1.5B (6 query heads per key head, D 128), 0.5B (7, D 64), the tiny model, no grouping, D 256;
    # key counts that leave a partial last block of 16
    torch.manual_seed(heads + dim + kv_len)
    q = torch.randn(1, q_len, heads, dim).transpose(1, 2)  # as the projections come: not contiguous
    k, v = _cache_like(kv_heads, kv_len, dim), _cache_like(kv_heads, kv_len, dim)
    mask = _causal(q_len, kv_len) if q_len > 1 else None
    out = attention(q, k, v, mask, isa=isa)
    assert out is not None and out.shape == (1, q_len, heads, dim)
    error = (out.transpose(1, 2) - attention_reference(q, k, v, mask)).abs()
    if isa in BF16_ISAS and dim % 32:  # bf16 products take 32 dimensions: such heads take the AVX-512 variant
        assert torch.equal(out, attention(q, k, v, mask, isa="avx512"))
    elif isa in MAX_ERROR:
        assert float(error.max()) < MAX_ERROR[isa] and float(error.mean()) < MEAN_ERROR[isa], (float(error.max()), float(error.mean()))
    else:
        assert torch.allclose(out.transpose(1, 2), attention_reference(q, k, v, mask), atol=2e-6, rtol=1e-5)


@needs_kernel
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dim", [128, 64])
def test_a_row_gets_the_same_bits_alone_and_in_any_batch(isa, dim):
    # what lets a speculative pass reproduce decode steps exactly
    torch.manual_seed(0)
    q_len, kv_len = 9, 500
    q = torch.randn(1, 12, q_len, dim)
    k, v = _cache_like(2, kv_len, dim), _cache_like(2, kv_len, dim)
    together = attention(q, k, v, _causal(q_len, kv_len), isa=isa)
    assert together is not None
    for i in range(q_len):
        seen = kv_len - q_len + i + 1
        alone = attention(q[:, :, i : i + 1], k[:, :, :seen], v[:, :, :seen], None, isa=isa)
        assert alone is not None and torch.equal(together[:, i], alone[:, 0]), f"row {i}"


def test_prefix_lengths_reads_causal_masks_and_refuses_others():
    assert prefix_lengths(_causal(3, 7), 3, 7).tolist() == [5, 6, 7]
    assert prefix_lengths(None, 1, 9).tolist() == [9]
    assert prefix_lengths(None, 4, 9) is None  # no mask over several rows: is_causal, SDPA's business
    holed = _causal(3, 7).clone()
    holed[0, 0, 2, 1] = False  # a row that skips a key (a padded or packed batch)
    assert prefix_lengths(holed, 3, 7) is None
    assert prefix_lengths(torch.zeros(1, 1, 3, 7), 3, 7) is None  # additive float mask
    assert prefix_lengths(torch.zeros(1, 1, 2, 7, dtype=torch.bool), 2, 7) is None  # a row that sees nothing


@needs_kernel
def test_shapes_it_does_not_take_fall_back_to_sdpa(monkeypatch):
    q, k, v = torch.randn(1, 4, 2, 24), _cache_like(2, 5, 24), _cache_like(2, 5, 24)
    assert attention(q, k, v, _causal(2, 5)) is None  # D not a multiple of 16
    q, k, v = torch.randn(2, 4, 1, 16), torch.randn(2, 2, 5, 16), torch.randn(2, 2, 5, 16)
    assert attention(q, k, v, None) is None  # a batch of sequences
    q, k, v = torch.randn(1, 4, 20, 16), _cache_like(2, 30, 16), _cache_like(2, 30, 16)
    assert attention(q, k, v, _causal(20, 30)) is None  # a prefill chunk
    monkeypatch.setenv(cpu_attention.ATTENTION_ENV, "torch")
    assert attention(torch.randn(1, 4, 1, 16), _cache_like(2, 5, 16), _cache_like(2, 5, 16), None) is None


@needs_kernel
@pytest.mark.parametrize("head_dim", [16, 32])
def test_a_verification_pass_scores_each_token_as_a_decode_step_does(tokenizer, head_dim):
    # the speculative decoder's premise, bit for bit: feeding 7 tokens at once on a cache gives the logits
    # that 7 one-token steps give, with w8a8 linears (exact int32 sums, rows independent; AMX for the
    # batch where the CPU has it, AVX2's vpmaddubsw where it lacks VNNI) and this attention (heads of 32
    # take AMX tiles where the CPU has them, of 16 the fp32 sweeps). (The fp32-activation int8 kernel sums
    # a batch in another order than one row, so there the match is close, not exact.)
    loaded = build_tiny_random_model(tokenizer, seed=3)
    model = loaded.model
    if head_dim != model.config.hidden_size // model.config.num_attention_heads:
        from transformers import Qwen2ForCausalLM

        config = model.config.__class__(**{**model.config.to_dict(), "hidden_size": 4 * head_dim, "intermediate_size": 8 * head_dim})
        torch.manual_seed(3)
        model = Qwen2ForCausalLM(config).eval()
        model.set_attn_implementation(loaded.model.config._attn_implementation)
    cpu_int8.use_int8_linears(model, int8_activations=True)
    prompt = tokenizer("def fibonacci(n):\n    if n < 2:\n        return n\n")["input_ids"]
    drafted = tokenizer("    return fibonacci(n - 1)")["input_ids"][:7]
    with torch.no_grad():
        cache = kv.new_cache(model.config)
        model(input_ids=torch.tensor([prompt]), past_key_values=cache, use_cache=True)
        kv.reserve(cache, 16)
        start = kv.length(cache)
        together = model(input_ids=torch.tensor([drafted]), past_key_values=cache, use_cache=True,
                         logits_to_keep=len(drafted)).logits[0]
        kv.crop_to(cache, start)
        steps = [model(input_ids=torch.tensor([[token]]), past_key_values=cache, use_cache=True).logits[0, -1]
                 for token in drafted]
    assert torch.equal(together, torch.stack(steps))


def test_a_mask_is_read_once_per_tensor_and_again_after_it_changes():
    # every layer of a forward gets the same mask; an in-place change must not reuse stale lengths
    mask = _causal(3, 7).clone()
    assert cpu_attention._lengths_of(mask, 3, 7).tolist() == [5, 6, 7]
    mask[0, 0, 0, 4] = False  # row 0 now sees keys 0-3
    assert cpu_attention._lengths_of(mask, 3, 7).tolist() == [4, 6, 7]
    assert cpu_attention._lengths_of(_causal(3, 7), 3, 7).tolist() == [5, 6, 7]  # an equal, newer tensor


@pytest.mark.parametrize("isa", BF16_ISAS)
@pytest.mark.real_model
def test_bf16_attention_keeps_the_real_models_predictions(tokenizer, monkeypatch, isa):
    """The 0.5B over 400 tokens of stdlib code fed in 8-token passes on a 1,500-token cache (every row through
    the kernel, as decode steps and verifications run): bf16 products (AVX512-BF16's or AMX's) against the fp32
    AVX-512 sweeps. Measured 0.99 of argmaxes kept and NLL within 0.002 nats, on the 1.5B too (BENCHMARKS.md)."""
    if isa not in cpu_attention.available_isas():
        pytest.skip(f"needs the {isa} attention variant (AVX512-BF16; AMX-BF16 for amx)")
    from engine.runtime import load_model
    from evals.bench_model import stdlib_code_tokens

    loaded = load_model("qwen2.5-coder-0.5b", "cpu")
    ids = stdlib_code_tokens(tokenizer, 1901)

    def logits_through(isa: str) -> torch.Tensor:
        monkeypatch.setenv(cpu_attention.ATTENTION_ENV, isa)
        cache = kv.new_cache(loaded.model.config)
        kv.encode_chunked(loaded.model, cache, ids[:1500])
        with torch.inference_mode():
            return torch.cat([loaded.model(input_ids=torch.tensor([ids[s : s + 8]]), past_key_values=cache, use_cache=True,
                                           logits_to_keep=8).logits[0].float() for s in range(1500, 1900, 8)])

    fp32, bf16 = logits_through("avx512"), logits_through(isa)
    target = torch.tensor(ids[1501:1901])
    nll = lambda logits: float(torch.nn.functional.cross_entropy(logits, target))  # noqa: E731
    assert not torch.equal(fp32, bf16)  # the two really ran different kernels
    assert float((fp32.argmax(-1) == bf16.argmax(-1)).float().mean()) >= 0.97
    assert abs(nll(bf16) - nll(fp32)) < 0.02, (nll(bf16), nll(fp32))
