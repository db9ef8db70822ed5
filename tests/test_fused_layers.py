"""Fused q/k/v and gate/up projections (engine/fused_layers.py) against transformers' own layer forward.

The fused path claims the unfused model's bits exactly, on every kind of pass the engine makes: a prefill,
decode steps on a cache, and a speculative pass of several rows on a cache. So every test compares with
``torch.equal``, not a tolerance.
"""

from __future__ import annotations

import pytest
import torch
from transformers import Qwen2ForCausalLM

from cache import kv
from engine.fused_layers import use_fused_layers
from kernels import cpu_int8
from kernels.cpu_int8 import Int8Linear, use_int8_linears

pytestmark = pytest.mark.skipif(not cpu_int8.kernel_available(), reason="int8 kernel needs x86-64 with AVX2 and a C compiler")


def _int8_twins(tiny_model) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Two copies of the tiny model on the product's int8 path; only the first is fused."""
    state = dict(tiny_model.model.state_dict())
    generator = torch.Generator().manual_seed(0)
    for name, tensor in state.items():  # random init leaves biases at zero, which would hide a misplaced one
        if name.endswith("_proj.bias"):
            state[name] = torch.randn(tensor.shape, generator=generator)
    twins = []
    for _ in range(2):
        model = Qwen2ForCausalLM(tiny_model.model.config).eval()
        model.load_state_dict(state)
        model.set_attn_implementation(tiny_model.model.config._attn_implementation)
        use_int8_linears(model, int8_activations=cpu_int8.int8_activations_available())
        twins.append(model)
    assert use_fused_layers(twins[0]) == 2  # both layers
    return twins[0], twins[1]


@torch.inference_mode()
def test_fused_layers_give_the_unfused_logits_on_every_kind_of_pass(tiny_model, tokenizer):
    fused, plain = _int8_twins(tiny_model)
    ids = tokenizer("def area(radius):\n    return 3.14159 * radius ** 2\n\nprint(area(").input_ids
    caches = []
    for model in (fused, plain):
        cache = kv.new_cache(model.config)
        prefill = model(input_ids=torch.tensor([ids[:-6]]), past_key_values=cache, use_cache=True).logits
        steps = [model(input_ids=torch.tensor([[token]]), past_key_values=cache, use_cache=True).logits
                 for token in ids[-6:-4]]
        verify = model(input_ids=torch.tensor([ids[-4:]]), past_key_values=cache, use_cache=True, logits_to_keep=4).logits
        caches.append((prefill, steps, verify, kv.snapshot(cache)))
    (prefill_f, steps_f, verify_f, rows_f), (prefill_p, steps_p, verify_p, rows_p) = caches
    assert torch.equal(prefill_f, prefill_p)
    assert all(torch.equal(a, b) for a, b in zip(steps_f, steps_p))
    assert torch.equal(verify_f, verify_p)
    assert all(torch.equal(a, b) for layer_f, layer_p in zip(rows_f, rows_p) for a, b in zip(layer_f, layer_p))


@torch.inference_mode()
def test_fused_projections_leave_each_original_layer_working_as_a_view(tiny_model):
    fused, plain = _int8_twins(tiny_model)
    x = torch.randn(3, fused.config.hidden_size)
    attention, reference = fused.model.layers[0].self_attn, plain.model.layers[0].self_attn
    for name in ("q_proj", "k_proj", "v_proj"):
        assert torch.equal(getattr(attention, name)(x), getattr(reference, name)(x)), name
    shared = attention.fused_qkv.packed.weights
    assert attention.k_proj.packed.weights.untyped_storage().data_ptr() == shared.untyped_storage().data_ptr()


def test_models_without_int8_projections_keep_their_forward(tiny_model):
    model = Qwen2ForCausalLM(tiny_model.model.config).eval()
    assert use_fused_layers(model) == 0
    assert not any(isinstance(m, Int8Linear) for m in model.modules())
    assert "forward" not in vars(model.model.layers[0])
