"""Superposed decoding: k suggestions for about the cost of one greedy pass.

Why: editors cycle through alternatives, and k separate decodes cost k times
one. Superposed decoding (Shen et al., 2024) keeps k drafts but feeds the model
*one* input per step, the probability-weighted sum of the drafts' last token
embeddings, so the cache holds a single sequence. Each draft is then extended
by the top tokens of the shared output distribution, rescored with an n-gram
model of this draft's own recent tokens (the n-gram model, built from the
document and repository context, keeps each draft coherent even though the
model saw a blend), and the k best of the k² candidates survive.

The first step is exact: the prompt's own distribution gives the k first
tokens. Drafts that reach a stop token or a stop rule are frozen and leave the
superposition.

Example::

    >>> ngrams = NgramModel([[1, 2, 3, 1, 2, 4]], order=3)
    >>> round(ngrams.probability([1, 2], 3), 3) > round(ngrams.probability([1, 2], 5), 3)
    True
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Sequence

import torch

from engine.runtime import LoadedModel
from engine.stops import CompletionContext, StopRules, finalize
from engine.types import FinishReason


class NgramModel:
    """Interpolated n-gram probabilities (orders 1..``order``) over token ids.

    Jelinek-Mercer interpolation with weights favouring longer contexts, and
    add-one smoothing at the unigram level so an unseen token keeps a small,
    non-zero probability.
    """

    def __init__(self, corpus: Sequence[Sequence[int]], order: int = 3, weights: Sequence[float] | None = None) -> None:
        self.order = order
        self.weights = list(weights) if weights is not None else [0.1, 0.3, 0.6][-order:] if order <= 3 else [1.0 / order] * order
        assert len(self.weights) == order, (self.weights, order)
        self.counts: list[dict[tuple[int, ...], Counter]] = [defaultdict(Counter) for _ in range(order)]
        self.total = 0
        for piece in corpus:
            piece = list(piece)
            for end in range(len(piece)):
                for n in range(order):  # n = context length
                    if end - n < 0:
                        break
                    self.counts[n][tuple(piece[end - n : end])][piece[end]] += 1
            self.total += len(piece)
        self.vocabulary = len(self.counts[0].get((), Counter())) + 1

    def probability(self, context: Sequence[int], token: int) -> float:
        """P(token | the last order-1 tokens of context), interpolated over orders."""
        unigrams = self.counts[0].get((), Counter())
        p = self.weights[0] * (unigrams.get(token, 0) + 1) / (self.total + self.vocabulary)
        for n in range(1, self.order):
            if len(context) < n:
                break
            seen = self.counts[n].get(tuple(context[len(context) - n :]))
            if seen:
                p += self.weights[n] * seen.get(token, 0) / sum(seen.values())
        return p


@dataclass
class _Draft:
    tokens: list[int] = field(default_factory=list)
    log_score: float = 0.0  # log P under the model's (superposed) distributions, with the n-gram blend
    text: str = ""
    finish: FinishReason = FinishReason.NONE


@dataclass(frozen=True)
class Suggestion:
    text: str
    token_ids: tuple[int, ...]
    score: float  # log probability used for ranking (higher is better)
    finish_reason: FinishReason


@dataclass(frozen=True)
class SuperposedResult:
    suggestions: tuple[Suggestion, ...]
    prefill_ms: float
    decode_ms: float
    passes: int  # model forwards after the prompt


@torch.inference_mode()
def superposed_decode(
    loaded: LoadedModel,
    prompt_ids: list[int],
    context: CompletionContext,
    k: int,
    max_tokens: int,
    *,
    ngrams: NgramModel | None = None,
    ngram_weight: float = 0.5,
    cache=None,
    cancelled: threading.Event | None = None,
) -> SuperposedResult:
    """Up to ``k`` distinct suggestions after ``prompt_ids`` (fed on ``cache`` when given), best first.

    ``ngram_weight`` mixes each candidate's probability as
    (1 - w) * p_model + w * p_ngram(draft's last tokens), the paper's
    interpolation; 0 disables the n-gram filter.
    """
    from transformers import DynamicCache

    model, tokenizer = loaded.model, loaded.tokenizer
    stop_ids = loaded.stop_token_ids
    embeddings = model.get_input_embeddings().weight  # [V, H]
    started = time.perf_counter()
    if cache is None:
        cache = DynamicCache(config=model.config)
    logits = model(input_ids=torch.tensor([prompt_ids], device=loaded.device), past_key_values=cache, use_cache=True,
                   logits_to_keep=1).logits[0, -1].float()
    prefill_ms = (time.perf_counter() - started) * 1000
    decode_started = time.perf_counter()

    probs = torch.softmax(logits, dim=-1).cpu()
    drafts: list[_Draft] = []
    top = torch.topk(probs, k)
    for p, token in zip(top.values.tolist(), top.indices.tolist()):
        drafts.append(_advance(_Draft(), token, math.log(max(p, 1e-30)), tokenizer, stop_ids, context, max_tokens))
    passes = 0
    while any(d.finish is FinishReason.NONE for d in drafts):
        if cancelled is not None and cancelled.is_set():
            break
        active = [d for d in drafts if d.finish is FinishReason.NONE]
        # one input: the active drafts' last embeddings, weighted by their (renormalised) probabilities
        scores = torch.tensor([d.log_score for d in active])
        weights = torch.softmax(scores, dim=0).to(embeddings.dtype).to(embeddings.device)
        last = torch.tensor([d.tokens[-1] for d in active], device=embeddings.device)
        blended = (weights[:, None] * embeddings[last]).sum(dim=0)
        logits = model(inputs_embeds=blended[None, None, :], past_key_values=cache, use_cache=True).logits[0, -1].float()
        passes += 1
        probs = torch.softmax(logits, dim=-1).cpu()
        top = torch.topk(probs, k)
        candidates: list[tuple[float, _Draft, int]] = []
        for draft in active:
            for p, token in zip(top.values.tolist(), top.indices.tolist()):
                if ngrams is not None and ngram_weight > 0:
                    p = (1 - ngram_weight) * p + ngram_weight * ngrams.probability(draft.tokens, token)
                candidates.append((draft.log_score + math.log(max(p, 1e-30)), draft, token))
        frozen = [d for d in drafts if d.finish is not FinishReason.NONE]
        pool: list[tuple[float, _Draft, int | None]] = [(d.log_score, d, None) for d in frozen] + candidates
        pool.sort(key=lambda item: item[0], reverse=True)
        survivors: list[_Draft] = []
        seen: set[tuple[int, ...]] = set()
        for score, draft, token in pool:
            tokens = tuple(draft.tokens) + ((token,) if token is not None else ())
            if tokens in seen:
                continue
            seen.add(tokens)
            survivors.append(draft if token is None else _advance(draft, token, score - draft.log_score, tokenizer, stop_ids, context, max_tokens))
            if len(survivors) == k:
                break
        drafts = survivors
    decode_ms = (time.perf_counter() - decode_started) * 1000
    return SuperposedResult(_distinct(drafts, context), prefill_ms, decode_ms, passes)


def _advance(
    draft: _Draft, token: int, log_p: float, tokenizer, stop_ids: frozenset[int], context: CompletionContext, max_tokens: int
) -> _Draft:
    """A new draft: ``draft`` plus ``token``, with its stop rules applied."""
    if token in stop_ids:
        return _Draft(list(draft.tokens), draft.log_score + log_p, draft.text, FinishReason.STOP_TOKEN)
    tokens = draft.tokens + [token]
    raw = tokenizer.decode(tokens, skip_special_tokens=False)
    if raw.endswith("\ufffd"):
        raw = raw[:-1]
    text, reason = StopRules(context).check(raw)
    finish = reason or (FinishReason.MAX_TOKENS if len(tokens) >= max_tokens else FinishReason.NONE)
    return _Draft(tokens, draft.log_score + log_p, text, finish)


def _distinct(drafts: list[_Draft], context: CompletionContext) -> tuple[Suggestion, ...]:
    """Post-processed suggestions, best first, without repeats (two drafts may end in the same text)."""
    out: list[Suggestion] = []
    seen: set[str] = set()
    for draft in sorted(drafts, key=lambda d: d.log_score, reverse=True):
        text = finalize(draft.text, context)
        if text in seen:
            continue
        seen.add(text)
        finish = draft.finish if draft.finish is not FinishReason.NONE else FinishReason.CANCELLED
        out.append(Suggestion(text, tuple(draft.tokens), draft.log_score, finish))
    return tuple(out)
