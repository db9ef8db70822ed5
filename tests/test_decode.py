"""The decode loop against slow references and scripted fakes."""

import threading
from types import SimpleNamespace

import pytest
import torch

from engine.decode import choose_token, decode
from engine.stops import CompletionContext
from engine.types import CompletionOptions, FinishReason, Scope

BLOCK = CompletionContext(prefix="", suffix="", scope=Scope.BLOCK, max_lines=10_000)


def reference_greedy(model, prompt_ids: list[int], steps: int) -> list[int]:
    """Greedy decoding without a KV cache: re-run the whole sequence every step."""
    ids = list(prompt_ids)
    with torch.no_grad():
        for _ in range(steps):
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(prompt_ids):]


def final_step(loaded, prompt_ids, context, options, cancelled=None):
    steps = list(decode(loaded, prompt_ids, context, options, cancelled))
    assert steps[-1].finish_reason is not FinishReason.NONE
    assert all(s.finish_reason is FinishReason.NONE for s in steps[:-1])
    return steps[-1]


@pytest.mark.parametrize("prompt", ["def add(a, b):\n    return", "x = [1, 2, 3]\nfor"])
def test_cached_greedy_equals_full_recompute(tiny_model, tokenizer, prompt):
    prompt_ids = tokenizer(prompt).input_ids
    step = final_step(tiny_model, prompt_ids, BLOCK, CompletionOptions(max_tokens=12))
    expected = reference_greedy(tiny_model.model, prompt_ids, len(step.token_ids))
    assert list(step.token_ids) == expected


def test_max_tokens_is_respected(tiny_model, tokenizer):
    step = final_step(tiny_model, tokenizer("a").input_ids, BLOCK, CompletionOptions(max_tokens=5))
    assert step.generated_tokens <= 5


def test_sampling_is_reproducible_with_a_seed(tiny_model, tokenizer):
    ids = tokenizer("import os\n").input_ids
    options = CompletionOptions(max_tokens=8, temperature=1.0, seed=7)
    first = final_step(tiny_model, ids, BLOCK, options).token_ids
    assert first == final_step(tiny_model, ids, BLOCK, options).token_ids


def test_top_p_keeps_only_the_nucleus():
    logits = torch.log(torch.tensor([0.6, 0.3, 0.1]))
    options = CompletionOptions(temperature=1.0, top_p=0.5)
    generator = torch.Generator().manual_seed(0)
    # the smallest set reaching 0.5 is {0}: token 0 every time
    assert {choose_token(logits, options, generator) for _ in range(50)} == {0}


def test_cancelled_request_stops_at_once(tiny_model, tokenizer):
    cancelled = threading.Event()
    cancelled.set()
    step = final_step(tiny_model, tokenizer("a").input_ids, BLOCK, CompletionOptions(max_tokens=50), cancelled)
    assert step.finish_reason is FinishReason.CANCELLED and step.generated_tokens == 0


class ScriptedLM:
    """A fake causal LM that emits a fixed token script, one token per forward."""

    def __init__(self, script: list[int], config, vocab: int):
        self.script, self.config, self.vocab, self.calls = script, config, vocab, 0

    def __call__(self, input_ids, past_key_values=None, use_cache=True, logits_to_keep=0):
        logits = torch.zeros(1, 1, self.vocab)
        logits[0, 0, self.script[min(self.calls, len(self.script) - 1)]] = 1.0
        self.calls += 1
        return SimpleNamespace(logits=logits)


def scripted(tiny_model, tokenizer, text: str, end: list[int]):
    script = tokenizer(text, add_special_tokens=False).input_ids + end
    fake = ScriptedLM(script, tiny_model.model.config, tiny_model.family.vocab_size)
    return SimpleNamespace(**{**vars(tiny_model), "model": fake, "stop_token_ids": tiny_model.stop_token_ids})


def test_fim_stop_token_ends_the_completion(tiny_model, tokenizer):
    loaded = scripted(tiny_model, tokenizer, "a + b", [151643])  # <|endoftext|>
    context = CompletionContext(prefix="    return ", suffix="\n", scope=Scope.LINE)
    step = final_step(loaded, [1, 2, 3], context, CompletionOptions())
    assert (step.text, step.finish_reason) == ("a + b", FinishReason.STOP_TOKEN)


def test_file_separator_is_a_stop_token(tiny_model, tokenizer):
    loaded = scripted(tiny_model, tokenizer, "x = 1", [151664, 64, 64])  # <|file_sep|>, then junk
    step = final_step(loaded, [1], BLOCK, CompletionOptions())
    assert (step.text, step.finish_reason) == ("x = 1", FinishReason.STOP_TOKEN)


def test_line_scope_ends_at_newline(tiny_model, tokenizer):
    loaded = scripted(tiny_model, tokenizer, "a + b\n    print(a)\n", [151643])
    context = CompletionContext(prefix="    return ", suffix="\n", scope=Scope.LINE)
    step = final_step(loaded, [1], context, CompletionOptions())
    assert (step.text, step.finish_reason) == ("a + b", FinishReason.END_OF_LINE)


def test_suffix_written_again_is_trimmed(tiny_model, tokenizer):
    # the model writes the hole, then the suffix's next line again
    loaded = scripted(tiny_model, tokenizer, "total = a + b\n    return total\n", [151643])
    context = CompletionContext(prefix="def f(a, b):\n    ", suffix="\n    return total\n", scope=Scope.BLOCK)
    step = final_step(loaded, [1], context, CompletionOptions())
    assert (step.text, step.finish_reason) == ("total = a + b", FinishReason.SUFFIX_OVERLAP)
