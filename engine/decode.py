"""The decode loop: prefill once, then one target pass per step until a stop rule fires.

Why one function: a reader should see every phase of a completion — prefill,
token choice, stop checks, streaming — top to bottom in one place. A step
feeds the last chosen token plus any drafted tokens (``engine.speculate``) and
keeps the drafts the target agrees with; plain decoding is the same loop with
empty drafts, so the speculative path has no code of its own to drift.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Iterator

import torch
from transformers import DynamicCache

from cache import kv
from engine.runtime import LoadedModel
from engine.speculate import Draft, Proposer
from engine.stops import CompletionContext, StopRules, finalize
from engine.types import CompletionOptions, FinishReason


DRAFT_ROOM = 16  # rows reserved past the token budget for a pass's drafted tokens


@dataclass(frozen=True)
class DecodeStep:
    text: str  # the suggestion so far, already cut by the stop rules
    generated_tokens: int
    finish_reason: FinishReason  # NONE while streaming
    prefill_ms: float
    decode_ms: float
    token_ids: tuple[int, ...] = ()  # generated so far (stop token excluded)
    target_forwards: int = 0  # decode passes of the target model so far (prefill excluded)
    drafted_tokens: int = 0  # speculation: tokens proposed so far
    accepted_tokens: int = 0  # ... and accepted by the target


def token_distribution(logits: torch.Tensor, options: CompletionOptions) -> torch.Tensor:
    """The sampling distribution over the vocabulary: temperature, then nucleus (top-p).

    logits: [V]. Speculative verification compares the target's and the draft's
    distributions, so both must come from this one function.
    """
    probs = torch.softmax(logits.float() / options.temperature, dim=-1)  # [V]
    if options.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        cumulative = torch.cumsum(sorted_probs, dim=-1)
        drop = cumulative - sorted_probs > options.top_p  # keep the smallest set reaching top_p
        sorted_probs[drop] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
        probs = probs / probs.sum()
    return probs


def choose_token(logits: torch.Tensor, options: CompletionOptions, generator: torch.Generator | None) -> int:
    """Greedy at temperature 0, else temperature + nucleus (top-p) sampling.

    logits: [V] for the last position.
    """
    if options.temperature <= 0:
        return int(torch.argmax(logits))
    return int(torch.multinomial(token_distribution(logits, options), 1, generator=generator))


def verify_draft(
    logits: torch.Tensor, draft: Draft, options: CompletionOptions, generator: torch.Generator | None
) -> tuple[int, int]:
    """How many drafted tokens the target accepts, and the token it adds after them.

    logits: [n + 1, V], the target's logits before each of the ``n`` drafted
    tokens and after the last. Greedy: accept while the draft equals the
    target's argmax; the added token is the target's own choice, so the output
    is exactly plain greedy decoding's. Sampling: accept token ``x`` with
    probability min(1, p(x)/q(x)); on rejection draw from max(0, p − q)
    renormalised (speculative sampling: the output is distributed as the
    target's own samples). A draft without probabilities (prompt lookup) has
    q(x) = 1 for its token.
    """
    n = len(draft.tokens)
    if options.temperature <= 0:
        targets = torch.argmax(logits, dim=-1).tolist()  # [n + 1]
        accepted = 0
        while accepted < n and draft.tokens[accepted] == targets[accepted]:
            accepted += 1
        return accepted, int(targets[accepted])
    for i, token in enumerate(draft.tokens):
        p = token_distribution(logits[i], options)
        if draft.probs is None:
            q = torch.zeros_like(p)
            q[token] = 1.0
        else:
            q = draft.probs[i].to(p.dtype)
        u = float(torch.rand((), generator=generator))
        if q[token] > 0 and u * float(q[token]) < float(p[token]):  # u < p/q
            continue
        residual = torch.clamp(p - q, min=0.0)
        total = float(residual.sum())
        if total <= 0:  # p == q: any token of p is as good
            residual, total = p, 1.0
        return i, int(torch.multinomial(residual / total, 1, generator=generator))
    return n, choose_token(logits[n], options, generator)


@torch.inference_mode()
def decode(
    loaded: LoadedModel,
    prompt_ids: list[int],
    context: CompletionContext,
    options: CompletionOptions,
    cancelled: threading.Event | None = None,
    cache: DynamicCache | None = None,
    proposer: Proposer | None = None,
    history: list[int] | None = None,
) -> Iterator[DecodeStep]:
    """Yield a DecodeStep per generated token; the last one has a finish reason.

    ``cache``: rows already encoded (a document session's fork); ``prompt_ids``
    then holds only the tokens still to feed after them. ``proposer``: drafts
    that each target pass verifies (speculative decoding); ``history`` is the
    token ids of the text before the cursor, for proposers that match n-grams.
    Without a proposer every pass feeds one token: plain decoding.

    Invariant between passes: the target's cache holds the prompt and every
    generated token but the last, which the next pass feeds first.
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
    prefill_ms = (time.perf_counter() - started) * 1000
    decode_started = time.perf_counter()
    kv.reserve(cache, options.max_tokens + DRAFT_ROOM)  # this fork is ours: append rows in place, not by copying all
    if proposer is not None:
        proposer.begin(history or [])
    new_tokens = [choose_token(output.logits[0, -1].float().cpu(), options, generator)]

    generated: list[int] = []
    text = ""
    forwards = drafted = accepted_total = 0
    while True:
        # 2. Take the chosen tokens one by one: stop token, cancel, stop rules, token budget.
        for token in new_tokens:
            finish = FinishReason.NONE
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

            # 3. Stream: the final step carries the post-processed suggestion.
            decode_ms = (time.perf_counter() - decode_started) * 1000
            counters = dict(target_forwards=forwards, drafted_tokens=drafted, accepted_tokens=accepted_total)
            if finish is not FinishReason.NONE:
                yield DecodeStep(finalize(text, context), len(generated), finish, prefill_ms, decode_ms, tuple(generated), **counters)
                return
            yield DecodeStep(text, len(generated), finish, prefill_ms, decode_ms, tuple(generated), **counters)

        # 4. Draft, then feed the last token and the draft in one pass and keep what the target agrees with.
        room = options.max_tokens - len(generated)
        draft = proposer.propose(generated, room - 1) if proposer is not None else Draft()
        draft = Draft(draft.tokens[: max(0, room - 1)], None if draft.probs is None else draft.probs[: max(0, room - 1)], draft.source)
        rows_before = kv.length(cache)
        step_input = torch.tensor([[generated[-1], *draft.tokens]], device=device)
        logits = model(input_ids=step_input, past_key_values=cache, use_cache=True, logits_to_keep=len(draft.tokens) + 1).logits[0]
        forwards += 1
        accepted, next_token = verify_draft(logits.float().cpu(), draft, options, generator)
        if accepted < len(draft.tokens):
            kv.crop_to(cache, rows_before + 1 + accepted)  # roll back the rejected drafts' rows
        drafted += len(draft.tokens)
        accepted_total += accepted
        new_tokens = [*draft.tokens[:accepted], next_token]
