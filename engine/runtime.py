"""Where and how the model runs: device choice, CPU threads, loading.

Why: on a 2-core CPU the default OpenMP wait policy makes every small matmul
cost ~4 ms (see DESIGN.md), so thread settings must be fixed *before* torch is
imported; on a GPU we simply use CUDA.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from engine.registry import ModelFamily, load_registry


def configure_cpu_threads() -> None:
    """Set OpenMP's wait policy before torch loads (no effect once it has)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "ACTIVE")


configure_cpu_threads()

import torch  # noqa: E402  (after the OpenMP settings above)


def select_device(requested: str | None = None) -> torch.device:
    """``requested`` ("cpu", "cuda", "cuda:1") wins; otherwise CUDA when present."""
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class LoadedModel:
    """A causal LM with its tokenizer and registry facts."""

    name: str
    model: Any  # transformers PreTrainedModel
    tokenizer: Any  # transformers PreTrainedTokenizerFast
    family: ModelFamily
    device: torch.device
    cpu_linear: str = "torch"  # CPU matmul path of the linear layers: "w8a8", "int8", "onednn" or "torch" (kernels.cpu_linear)

    @property
    def stop_token_ids(self) -> frozenset[int]:
        return frozenset(self.family.stop_token_ids)


def load_model(
    name: str | None = None, device: str | None = None, *, install_missing: bool = False, cpu_linear: str | None = None
) -> LoadedModel:
    """Load an installed model (fp32 on CPU, fp16 on CUDA).

    On CPU the linear layers hold int8 weights (``kernels/cpu_int8.py``: 2.5x
    the decode speed of fp32 here, same predictions to within rounding) and
    multiply int8-rounded activations, unless ``cpu_linear`` (or
    ``$LIVEFIM_CPU_LINEAR``) says otherwise (``kernels.cpu_linear``).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from engine.install import install, require_installed
    from kernels.cpu_linear import CPU_LINEAR_CHOICES, default_cpu_linear, use_cpu_linears

    cpu_linear = cpu_linear or default_cpu_linear()
    if cpu_linear not in CPU_LINEAR_CHOICES:
        raise ValueError(f"cpu_linear must be one of {', '.join(CPU_LINEAR_CHOICES)}, got {cpu_linear!r}")

    spec = load_registry().model(name)
    if install_missing:
        install(spec.name)
    installed = require_installed(spec.name)
    target = select_device(device)
    dtype = torch.float16 if target.type == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(installed.path, dtype=dtype)
    model.to(target).eval()
    linear = use_cpu_linears(model, cpu_linear) if target.type == "cpu" else "torch"
    if linear in ("w8a8", "int8"):
        from engine.fused_layers import use_fused_layers

        use_fused_layers(model)  # q/k/v and gate/up in one int8 call each: the same bits, fewer calls
    use_grouped_attention(model)
    tokenizer = AutoTokenizer.from_pretrained(installed.path)
    return LoadedModel(name=spec.name, model=model, tokenizer=tokenizer, family=spec.family, device=target, cpu_linear=linear)


GROUPED_ATTENTION = "livefim_gqa"


def _grouped_attention_forward(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                               attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                               is_causal: bool | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers' SDPA attention, except that decode steps and short causal passes on a cache (a
    speculative verification) take the batch-invariant CPU kernel (``kernels/cpu_attention.py``) where it
    runs, and other masked passes fold the query heads (``kernels/attention.py``) instead of repeating
    every cached key and value for each of them."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from kernels import cpu_attention
    from kernels.attention import grouped_query_attention

    if not dropout and query.device.type == "cpu":
        rows = cpu_attention.attention(query, key, value, attention_mask, scaling)
        if rows is not None:
            return rows, None

    # No mask over several tokens may mean is_causal: transformers' path knows how to read that.
    if (attention_mask is None and query.shape[2] > 1) or getattr(module, "num_key_value_groups", 1) == 1 or dropout:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    out = grouped_query_attention(query, key, value, attention_mask, scaling)  # [B, H, Q, D]
    return out.transpose(1, 2).contiguous(), None


def use_grouped_attention(model: Any) -> None:
    """Run the model's attention through ``_grouped_attention_forward`` (same results as SDPA; tested)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(GROUPED_ATTENTION, _grouped_attention_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(GROUPED_ATTENTION, sdpa_mask)  # the masks SDPA gets
    model.set_attn_implementation(GROUPED_ATTENTION)


TINY_MODEL_NAME = "tiny-random-qwen2"


def build_tiny_random_model(tokenizer: Any, seed: int = 0, family: ModelFamily | None = None) -> LoadedModel:
    """A random 2-layer Qwen2 (width 64) with a real tokenizer's vocabulary, on the CPU.

    Why: tests and ``LIVEFIM_TINY_MODEL=1`` need the whole pipeline (real prompts,
    real stop ids) in well under a second; its output is meaningless.
    """
    from transformers import Qwen2Config, Qwen2ForCausalLM

    family = family or load_registry().model().family
    config = Qwen2Config(
        vocab_size=family.vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        rope_theta=family.rope_theta,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config).eval()
    use_grouped_attention(model)  # as load_model does
    return LoadedModel(name=TINY_MODEL_NAME, model=model, tokenizer=tokenizer, family=family, device=torch.device("cpu"))


def load_tiny_random_model(tokenizer_from: str | None = None, seed: int = 0) -> LoadedModel:
    """``build_tiny_random_model`` with the tokenizer of an installed registry model (installed if missing)."""
    from transformers import AutoTokenizer

    from engine.install import install, model_dir

    spec = load_registry().model(tokenizer_from)
    install(spec.name)
    return build_tiny_random_model(AutoTokenizer.from_pretrained(model_dir(spec.name)), seed, spec.family)
