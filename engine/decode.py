"""The decode loop: prefill once, then one token at a time until a stop rule fires.

Why one function: a reader should see every phase of a completion — prefill,
token choice, stop checks, streaming — top to bottom in one place.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Iterator

import torch
from transformers import DynamicCache

from engine.runtime import LoadedModel
from engine.stops import CompletionContext, StopRules, finalize
from engine.types import CompletionOptions, FinishReason


@dataclass(frozen=True)
class DecodeStep:
    text: str  # the suggestion so far, already cut by the stop rules
    generated_tokens: int
    finish_reason: FinishReason  # NONE while streaming
    prefill_ms: float
    decode_ms: float
    token_ids: tuple[int, ...] = ()  # generated so far (stop token excluded)


def choose_token(logits: torch.Tensor, options: CompletionOptions, generator: torch.Generator | None) -> int:
    """Greedy at temperature 0, else temperature + nucleus (top-p) sampling.

    logits: [V] for the last position.
    """
    if options.temperature <= 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.float() / options.temperature, dim=-1)  # [V]
    if options.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        cumulative = torch.cumsum(sorted_probs, dim=-1)
        drop = cumulative - sorted_probs > options.top_p  # keep the smallest set reaching top_p
        sorted_probs[drop] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator))


@torch.inference_mode()
def decode(
    loaded: LoadedModel,
    prompt_ids: list[int],
    context: CompletionContext,
    options: CompletionOptions,
    cancelled: threading.Event | None = None,
    cache: DynamicCache | None = None,
) -> Iterator[DecodeStep]:
    """Yield a DecodeStep per generated token; the last one has a finish reason.

    ``cache``: rows already encoded (a document session's fork); ``prompt_ids``
    then holds only the tokens still to feed after them.
    """
    model, tokenizer, device = loaded.model, loaded.tokenizer, loaded.device
    stop_ids = loaded.stop_token_ids
    rules = StopRules(context)
    generator = None
    if options.temperature > 0:
        generator = torch.Generator(device="cpu")
        generator.manual_seed(options.seed if options.seed is not None else int(time.time_ns() % (1 << 31)))

    # 0. A request cancelled while it waited for the model costs nothing.
    if cancelled is not None and cancelled.is_set():
        yield DecodeStep("", 0, FinishReason.CANCELLED, 0.0, 0.0)
        return

    # 1. Prefill: encode the prompt; keep only the last position's logits.
    started = time.perf_counter()
    if cache is None:
        cache = DynamicCache(config=model.config)
    input_ids = torch.tensor([prompt_ids], device=device)
    output = model(input_ids=input_ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
    logits = output.logits[0, -1]  # [V]
    prefill_ms = (time.perf_counter() - started) * 1000
    decode_started = time.perf_counter()

    generated: list[int] = []
    text = ""
    finish = FinishReason.NONE
    while finish is FinishReason.NONE:
        # 2. Choose the next token (on CPU: sampling must be reproducible across devices).
        token = choose_token(logits.float().cpu(), options, generator)

        # 3. Stop on a FIM stop token, a cancel, or the token budget.
        if token in stop_ids:
            finish = FinishReason.STOP_TOKEN
        elif cancelled is not None and cancelled.is_set():
            finish = FinishReason.CANCELLED
        else:
            generated.append(token)
            raw = tokenizer.decode(generated, skip_special_tokens=False)
            if raw.endswith("\ufffd"):
                raw = raw[:-1]  # half of a multi-byte character: wait for the rest
            text, reason = rules.check(raw)
            if reason is not None:
                finish = reason
            elif len(generated) >= options.max_tokens:
                finish = FinishReason.MAX_TOKENS

        # 4. Stream: the final step carries the post-processed suggestion.
        decode_ms = (time.perf_counter() - decode_started) * 1000
        if finish is not FinishReason.NONE:
            yield DecodeStep(finalize(text, context), len(generated), finish, prefill_ms, decode_ms, tuple(generated))
            return
        yield DecodeStep(text, len(generated), finish, prefill_ms, decode_ms, tuple(generated))

        # 5. Extend the cache by the chosen token.
        step_input = torch.tensor([[token]], device=device)
        logits = model(input_ids=step_input, past_key_values=cache, use_cache=True).logits[0, -1]
