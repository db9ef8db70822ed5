"""Draft proposers for speculative decoding: guesses the target model verifies in one pass.

Why: on a CPU a decode step of the 1.5B costs about as much for eight tokens
as for one (it is bound by reading the weights), so every drafted token the
target agrees with is nearly free. Greedy output stays byte-identical to plain
decoding because the target keeps the final word on every token
(``engine.decode`` verifies); the proposers only decide how good the guesses
are:

* ``PromptLookup`` continues an n-gram the text already contains: code repeats
  its own identifiers, argument lists and whole lines (prompt-lookup decoding,
  CopySpec). No model, no cost.
* ``DraftModel`` runs a smaller model of the same tokenizer (the 0.5B for the
  1.5B) on its own KV cache, stopping early when its confidence drops
  (SpecDec++'s threshold rule).
* ``Combined`` takes a long enough lookup match when there is one and asks the
  draft model otherwise.

Example::

    >>> lookup = PromptLookup([[5, 6, 7, 8, 9]], max_draft=3)
    >>> lookup.begin([1, 5, 6])          # the text before the cursor ends in 5 6
    >>> lookup.propose([], 8).tokens     # ... which the corpus continues with 7 8 9
    (7, 8, 9)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

import torch

from cache import kv


SPECULATION_MODES: tuple[str, ...] = ("off", "lookup", "draft", "combined")
DEFAULT_SPECULATION = "lookup"  # free and lossless; a 0.5B draft does not pay on a 2-core CPU (BENCHMARKS.md)


@dataclass(frozen=True)
class SpeculationSettings:
    """How much to draft; defaults chosen with ``livefim bench decode`` (BENCHMARKS.md)."""

    lookup_max_draft: int = 8
    lookup_first_draft: int | None = None  # None: ``first_draft_for`` the model's pass costs
    lookup_min_ngram: int | None = None  # None: ``min_ngram_for`` the model's pass costs
    draft_max: int = 6
    draft_min_confidence: float = 0.4
    combined_min_lookup: int = 3

    def first_draft_for(self, cheap_verify_rows: bool) -> int:
        """How many tokens a lookup draft holds until the drafts start coming true (``PromptLookup``):
        ``lookup_first_draft`` when set, else 3 where extra verification rows are cheap
        (``LoadedModel.cheap_verify_rows``: AMX, AVX512-VNNI, a GPU) and 2 where they are not (AVX2: a
        9-row pass costs 2.2-2.5x a step). On AVX2, 8-token drafts from the start replayed at 1.56-1.66x (seed 0)
        and 1.01-1.04x (seed 1) against 1.79x and 1.27x for drafts that start at 2 and double; with AMX,
        and with AVX512-VNNI on Zen 5, 3 -> 8 beside 1-token matches replayed best of the 18 settings tried
        on seeds 1 and 2 (BENCHMARKS.md)."""
        if self.lookup_first_draft is not None:
            return min(self.lookup_first_draft, self.lookup_max_draft)
        return min(3 if cheap_verify_rows else 2, self.lookup_max_draft)

    def min_ngram_for(self, cheap_verify_rows: bool) -> int:
        """The shortest n-gram match that proposes a lookup draft: ``lookup_min_ngram`` when set, else 1.

        A shorter match proposes more often and more wrongly. Where a wrong row costs 5% of a step (AMX, VNNI),
        continuing the last occurrence of the last token pays: 2.04 -> 2.23x (seed 0), 1.46 -> 1.62x
        (seed 1) and 1.66 -> 1.70x (seed 2) over plain, with 3-token first drafts. It pays on AVX2 too, where
        drafts start at 2 tokens: replayed on a Zen 3, the 1.5B went 1.64 -> 1.74x (seeds 0-2) and 1.60 ->
        1.69x (held-out seeds 3-4) against 2-token matches, and the 0.5B 2.22 -> 2.24x (BENCHMARKS.md).
        ``cheap_verify_rows`` is kept for callers: every CPU now takes the same length.
        """
        if self.lookup_min_ngram is not None:
            return self.lookup_min_ngram
        return 1


@dataclass(frozen=True)
class Draft:
    """Drafted tokens and, for sampling, the draft's distribution at each ([n, V]); None: deterministic."""

    tokens: tuple[int, ...] = ()
    probs: torch.Tensor | None = None
    source: str = ""


def tokens_agreeing(draft: Sequence[int], text: Sequence[int], start: int) -> int:
    """How many of ``draft``'s tokens ``text`` repeats from ``start`` on: under greedy decoding, how many of a
    draft the target accepted, once ``text`` is what it generated.

    >>> tokens_agreeing((7, 8, 9), [1, 7, 8, 5], 1)
    2
    """
    taken = 0
    while taken < len(draft) and start + taken < len(text) and draft[taken] == text[start + taken]:
        taken += 1
    return taken


class Proposer(Protocol):
    """What the decode loop asks of a drafter.

    ``begin`` once after the target's prefill with the token ids of the text
    before the cursor (what the suggestion continues); then ``propose`` before
    each verification with everything generated so far (the target's choices,
    never rejected drafts) and the most tokens worth drafting.
    """

    name: str

    def begin(self, history: Sequence[int]) -> None: ...

    def propose(self, generated: Sequence[int], limit: int) -> Draft: ...


class PromptLookup:
    """Continue the longest recent n-gram match (``max_ngram`` down to ``min_ngram`` tokens).

    The corpus is what the prompt holds (repository context, prefix, suffix)
    plus, as it grows, the suggestion itself; a match's continuation is the
    draft. Later occurrences win: the text nearest the cursor is the best guess.

    Drafts hold ``first_draft`` tokens at first; one the target takes whole
    doubles the next (up to ``max_draft``), one it rejects sets the next to what
    it took plus one (at least ``first_draft``). A copy that keeps coming true
    is usually a long one; a wrong guess then costs few verification rows.
    """

    name = "lookup"

    max_candidates = 4  # occurrences of one n-gram tried, latest first

    def __init__(self, corpus: Sequence[Sequence[int]], *, max_draft: int = 8, min_ngram: int = 2, max_ngram: int = 4,
                 first_draft: int | None = None) -> None:
        assert 1 <= min_ngram <= max_ngram, (min_ngram, max_ngram)
        self.max_draft, self.min_ngram, self.max_ngram = max_draft, min_ngram, max_ngram
        self.first_draft = max_draft if first_draft is None else max(1, min(first_draft, max_draft))
        self._draft_limit = self.first_draft
        self._last_draft: tuple[int, tuple[int, ...]] | None = None  # (tokens generated before it, the draft)
        self._text: list[int] = []
        self._where: dict[tuple[int, ...], list[int]] = {}  # n-gram -> ends of its occurrences in _text, in order
        self._segment_ends: list[int] = []
        for piece in corpus:
            self._extend(piece)
            self._segment_ends.append(len(self._text))  # a continuation never runs across pieces
        self._history: list[int] = []
        self._generated_from = len(self._text)

    def _extend(self, ids: Sequence[int]) -> None:
        text, where = self._text, self._where
        for token in ids:
            text.append(token)
            end = len(text)
            for n in range(self.min_ngram, min(self.max_ngram, end) + 1):
                where.setdefault(tuple(text[end - n : end]), []).append(end)

    def begin(self, history: Sequence[int]) -> None:
        self._history = list(history[-self.max_ngram :])
        self._generated_from = len(self._text)
        self._draft_limit, self._last_draft = self.first_draft, None

    def _next_limit(self, generated: Sequence[int]) -> int:
        """The draft length after the last draft's fate: doubled when all of it came true, else what came true + 1."""
        if self._last_draft is not None:
            before, draft = self._last_draft
            taken = tokens_agreeing(draft, generated, before)
            whole = taken == len(draft)
            self._draft_limit = min(self.max_draft, 2 * self._draft_limit) if whole else max(self.first_draft, taken + 1)
            self._last_draft = None
        return self._draft_limit

    def continuations(self, generated: Sequence[int], limit: int, most: int = 1) -> list[tuple[int, ...]]:
        """Up to ``most`` distinct continuations of the text's last n-gram, best first (longer match, then
        later occurrence), each at most ``limit`` tokens and the current draft length. The first is the draft
        ``propose`` makes; the others are what a tree of candidates would verify beside it."""
        limit = min(limit, self._next_limit(generated))
        seen = len(self._text) - self._generated_from
        if seen < len(generated):
            self._extend(generated[seen:])  # the suggestion so far is corpus too
        if limit <= 0:
            return []
        found: list[tuple[int, ...]] = []
        key_source = (self._history + list(generated))[-self.max_ngram :]
        for n in range(min(self.max_ngram, len(key_source)), self.min_ngram - 1, -1):
            for end in reversed(self._where.get(tuple(key_source[-n:]), ())[-self.max_candidates :]):
                stop = next((e for e in self._segment_ends if e >= end), len(self._text))
                if stop > end:  # something follows this occurrence within its piece (not the key itself)
                    tokens = tuple(self._text[end : min(stop, end + limit)])
                    if tokens not in found:
                        found.append(tokens)
                    if len(found) == most:
                        break
            if len(found) == most:
                break
        if found:
            self._last_draft = (len(generated), found[0])
        return found

    def propose(self, generated: Sequence[int], limit: int) -> Draft:
        found = self.continuations(generated, limit)
        return Draft(found[0] if found else (), None, self.name)


DRAFT_CACHE_ROOM = 256  # rows a draft model's fork appends in place (beyond that it concatenates)


@dataclass
class DraftModel:
    """A smaller model drafting greedily (or sampling, when the request samples) on its own cache.

    ``cache`` holds the prompt's rows except ``pending`` (ids still to feed,
    typically ``<|fim_middle|>``). The rows after the prompt always describe a
    prefix of what the target accepted: before drafting, rows past the longest
    common prefix with ``generated`` are cropped (a rejection rolls back here).
    Drafting stops at ``max_draft`` tokens or when the draft's probability of
    its own choice falls below ``min_confidence`` (the first token is always
    drafted: verifying one token costs about what a plain step does).
    """

    model: Any
    cache: Any
    pending: list[int]
    max_draft: int = 6
    min_confidence: float = 0.4
    distribution: Callable[[torch.Tensor], torch.Tensor] | None = None  # sampling: logits -> probs
    generator: torch.Generator | None = None
    name: str = "draft"
    fed: list[int] = field(default_factory=list)  # tokens after the prompt that have rows
    forwards: int = 0

    def __post_init__(self) -> None:
        self._prompt_rows = kv.length(self.cache) + len(self.pending)

    @property
    def rows(self) -> int:
        return kv.length(self.cache)

    def begin(self, history: Sequence[int]) -> None:
        return None

    def propose(self, generated: Sequence[int], limit: int) -> Draft:
        limit = min(limit, self.max_draft)
        if limit <= 0 or not generated:
            return Draft(source=self.name)
        common = 0
        for ours, theirs in zip(self.fed, generated):
            if ours != theirs:
                break
            common += 1
        if common < len(self.fed):  # roll back what the target rejected
            kv.crop_to(self.cache, self._prompt_rows + common)
            del self.fed[common:]
        logits = self._feed(self.pending + list(generated[common:]))
        self.pending = []
        self.fed.extend(generated[common:])
        tokens: list[int] = []
        rows: list[torch.Tensor] = []
        while True:
            probs = torch.softmax(logits.float(), dim=-1) if self.distribution is None else self.distribution(logits)
            if self.distribution is None:
                token = int(torch.argmax(probs))
            else:
                token = int(torch.multinomial(probs, 1, generator=self.generator))
            if tokens and float(probs[token]) < self.min_confidence:
                break
            tokens.append(token)
            rows.append(probs)
            if len(tokens) >= limit:
                break
            logits = self._feed([token])
            self.fed.append(token)
        return Draft(tuple(tokens), torch.stack(rows) if self.distribution is not None else None, self.name)

    def _feed(self, ids: list[int]) -> torch.Tensor:
        self.forwards += 1
        logits = kv.encode(self.model, self.cache, ids).float().cpu()
        if self.forwards == 1:  # the first pass made the fork's rows its own: append in place from now on
            kv.reserve(self.cache, DRAFT_CACHE_ROOM)
        return logits


@dataclass
class Combined:
    """Prompt lookup when it has a match of at least ``min_lookup`` tokens, else the draft model.

    Its lookup should draft whole matches from the start (no ``first_draft``): a short first draft would
    never reach ``min_lookup``.

    The draft model still sees every accepted token (its cache follows
    ``generated`` lazily), so switching between the two costs nothing.
    """

    lookup: PromptLookup
    draft: DraftModel
    min_lookup: int = 3
    name: str = "combined"

    def begin(self, history: Sequence[int]) -> None:
        self.lookup.begin(history)
        self.draft.begin(history)

    def propose(self, generated: Sequence[int], limit: int) -> Draft:
        found = self.lookup.propose(generated, limit)
        if len(found.tokens) >= min(self.min_lookup, limit):
            return found
        return self.draft.propose(generated, limit)
