"""oneDNN linear layers against torch's own: same results up to summation order."""

from __future__ import annotations

import pytest
import torch
from transformers import Qwen2ForCausalLM

from engine.runtime import load_model
from kernels.cpu_linear import OneDnnLinear, default_cpu_linear, onednn_available, use_onednn_linears

pytestmark = pytest.mark.skipif(not onednn_available(), reason="torch built without oneDNN")


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(1, 64), (3, 64), (2, 5, 64), (1, 1, 64)])
def test_onednn_linear_equals_torch_linear(bias, shape):
    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 96, bias=bias)
    x = torch.randn(*shape)
    with torch.inference_mode():
        assert torch.allclose(OneDnnLinear(layer)(x), layer(x), atol=1e-5, rtol=1e-5)


def test_swapped_model_keeps_its_logits_and_greedy_choice(tiny_model, tokenizer):
    twin = Qwen2ForCausalLM(tiny_model.model.config).eval()
    twin.load_state_dict(tiny_model.model.state_dict())
    swapped = use_onednn_linears(twin)
    assert swapped == 2 * 7 + 1  # q, k, v, o, gate, up, down per layer, and the head
    ids = torch.tensor([tokenizer("def add(a, b):\n    return a + b\n").input_ids])
    with torch.inference_mode():
        expected, got = tiny_model.model(ids).logits, twin(ids).logits
    assert torch.allclose(got, expected, atol=1e-4)
    assert torch.equal(got.argmax(-1), expected.argmax(-1))


def test_real_model_loads_with_onednn_and_agrees_with_torch(tokenizer):
    fast_model = load_model("qwen2.5-coder-0.5b", "cpu", cpu_linear="onednn")
    reference = load_model("qwen2.5-coder-0.5b", "cpu", cpu_linear="torch")
    assert fast_model.cpu_linear == "onednn" and reference.cpu_linear == "torch"
    ids = torch.tensor([tokenizer("import os\n\ndef list_python_files(root):\n    return [").input_ids])
    with torch.inference_mode():
        fast, slow = fast_model.model(ids).logits[0, -1], reference.model(ids).logits[0, -1]
    assert torch.allclose(fast, slow, atol=2e-3, rtol=1e-4)
    assert int(fast.argmax()) == int(slow.argmax())


@pytest.mark.parametrize("kernel", [True, False])
def test_the_default_is_w8a8_where_the_kernel_loads_unless_the_environment_says_otherwise(monkeypatch, kernel):
    from kernels import cpu_int8

    monkeypatch.delenv("LIVEFIM_CPU_LINEAR", raising=False)
    monkeypatch.setattr(cpu_int8, "kernel_available", lambda: kernel)
    assert default_cpu_linear() == ("w8a8" if kernel else "int8")
    monkeypatch.setenv("LIVEFIM_CPU_LINEAR", "onednn")
    assert default_cpu_linear() == "onednn"


def test_bad_choice_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("LIVEFIM_CPU_LINEAR", "fast")
    with pytest.raises(ValueError, match="LIVEFIM_CPU_LINEAR"):
        default_cpu_linear()
