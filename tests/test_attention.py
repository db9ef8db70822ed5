"""Grouped-query attention that folds query heads, against repeating the keys (transformers' way); and the
model on either of its attention paths (the fold, the CPU kernel) against stock SDPA."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import DynamicCache, Qwen2ForCausalLM

import engine.runtime as runtime
import kernels.attention as attention
import kernels.cpu_attention as cpu_attention
from kernels.attention import grouped_query_attention, grouped_query_attention_reference


@pytest.mark.parametrize("heads,kv_heads,q_len,kv_len", [(4, 2, 3, 8), (12, 2, 9, 40), (14, 2, 1, 5), (4, 4, 5, 5), (6, 1, 7, 7)])
@pytest.mark.parametrize("mask_kind", ["none", "bool", "float"])
def test_folded_heads_equal_repeated_keys(heads, kv_heads, q_len, kv_len, mask_kind):
    torch.manual_seed(heads * 100 + q_len)
    q, k, v = torch.randn(2, heads, q_len, 16), torch.randn(2, kv_heads, kv_len, 16), torch.randn(2, kv_heads, kv_len, 16)
    causal = torch.ones(q_len, kv_len, dtype=torch.bool).tril(kv_len - q_len)[None, None].expand(2, 1, q_len, kv_len)
    mask = {"none": None, "bool": causal, "float": torch.where(causal, 0.0, float("-inf"))}[mask_kind]
    got = grouped_query_attention(q, k, v, mask, scale=0.3)
    assert torch.allclose(got, grouped_query_attention_reference(q, k, v, mask, scale=0.3), atol=1e-5)


def test_a_mask_of_the_wrong_shape_is_refused():
    q, k = torch.randn(1, 4, 3, 8), torch.randn(1, 2, 6, 8)
    with pytest.raises(AssertionError, match="mask must be"):
        grouped_query_attention(q, k, k, torch.ones(1, 1, 3, 5, dtype=torch.bool))


PATHS = ["fold", pytest.param("kernel", marks=pytest.mark.skipif(not cpu_attention.available(), reason="needs AVX2, FMA and cc"))]


def _stock_twin_and_spy(folded, monkeypatch, path="fold"):
    """The same weights on stock SDPA (its own config: the attention choice lives there), and a list that
    records the query shape of every call the model's ``path`` served: ``"fold"`` (``kernels/attention.py``,
    with the CPU kernel switched off) or ``"kernel"`` (``kernels/cpu_attention.py``)."""
    stock = Qwen2ForCausalLM(copy.deepcopy(folded.config)).eval()
    stock.load_state_dict(folded.state_dict())
    stock.set_attn_implementation("sdpa")
    calls = []
    if path == "fold":
        monkeypatch.setenv(cpu_attention.ATTENTION_ENV, "torch")
        real = attention.grouped_query_attention
        monkeypatch.setattr(attention, "grouped_query_attention", lambda *a, **k: calls.append(a[0].shape) or real(*a, **k))
    else:
        real_kernel = cpu_attention.attention

        def spy(*a, **k):
            out = real_kernel(*a, **k)
            if out is not None:
                calls.append(a[0].shape)
            return out

        monkeypatch.setattr(cpu_attention, "attention", spy)
    return stock, calls


@pytest.mark.parametrize("path", PATHS)
def test_model_with_folded_attention_equals_sdpa_on_a_cache(tiny_model, tokenizer, monkeypatch, path):
    """Several tokens fed on a cache (the masked case the fold and the kernel are for): stock SDPA's logits."""
    folded = tiny_model.model
    assert folded.config._attn_implementation == runtime.GROUPED_ATTENTION
    stock, calls = _stock_twin_and_spy(folded, monkeypatch, path)
    ids = torch.tensor([tokenizer("def area(r):\n    return 3.14 * r * r\n\nprint(area(2))\n").input_ids])
    with torch.inference_mode():
        outputs = []
        for model in (stock, folded):
            cache = DynamicCache(config=model.config)
            model(ids[:, :9], past_key_values=cache, use_cache=True)
            outputs.append(model(ids[:, 9:], past_key_values=cache, use_cache=True).logits)
    assert calls, f"the {path} path was not taken"
    assert torch.allclose(outputs[0], outputs[1], atol=1e-5)


@pytest.mark.parametrize("path", PATHS)
def test_decode_steps_take_the_folded_path_and_match_sdpa(tiny_model, tokenizer, monkeypatch, path):
    """One token at a time on a cache with reserved room (keys are a strided view): stock SDPA's logits."""
    from cache import kv

    folded = tiny_model.model
    stock, calls = _stock_twin_and_spy(folded, monkeypatch, path)
    ids = torch.tensor([tokenizer("class Stack:\n    def push(self, item):\n        self.items.append(item)\n").input_ids])
    with torch.inference_mode():
        steps = []
        for model in (stock, folded):
            cache = DynamicCache(config=model.config)
            model(ids[:, :6], past_key_values=cache, use_cache=True)
            kv.reserve(cache, ids.shape[1])
            steps.append([model(ids[:, i : i + 1], past_key_values=cache, use_cache=True).logits for i in range(6, ids.shape[1])])
    assert calls and all(shape[2] == 1 for shape in calls), f"decode steps did not take the {path} path"
    for expected, got in zip(*steps):
        assert torch.allclose(expected, got, atol=1e-5)
