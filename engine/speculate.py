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
    """How much to draft; defaults chosen with ``livefim bench decode`` and ``evals.lookup_replay`` (BENCHMARKS.md).

    ``lookup_first_draft``: None sizes each lookup draft from this machine's pass prices and how drafts have
    come true (``DraftPricing``); a number keeps the older rule, drafts that start at that many tokens and
    double while they come true whole. ``lookup_min_ngram``: the shortest n-gram match that proposes a draft;
    1-token matches replayed ahead of longer ones on AMX, AVX512-VNNI and AVX2 alike (BENCHMARKS.md).
    """

    lookup_max_draft: int = 8
    lookup_first_draft: int | None = None
    lookup_min_ngram: int = 1
    draft_max: int = 6
    draft_min_confidence: float = 0.4
    combined_min_lookup: int = 3


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


def best_draft_length(available: int, first_rate: float, next_rate: float, row_costs: Sequence[float]) -> int:
    """How many of ``available`` drafted tokens to verify: the length whose pass brings the most tokens per
    unit of time. A pass of ``1 + d`` rows costs ``row_costs[d]`` (a one-token step = ``row_costs[0]``) and
    brings ``1 + first_rate * (1 + next_rate + ... + next_rate ** (d - 1))`` tokens on average: its own token,
    plus each drafted one the target takes, which needs the one before it taken too.

    Why: rows cost differently by machine (``engine.pass_costs``) and drafts come true differently by model
    and code, so neither a fixed length nor a per-CPU constant is right everywhere. Replayed on a Zen 3, a
    3-token cap gained the 1.5B 10% and cost the 0.5B 12%; measured on a Zen 2 against drafts that start at 2
    and double, the 1.5B went 1.54 -> 1.64x plain and the 0.5B 2.06 -> 2.00x (BENCHMARKS.md).

    >>> avx2 = (1.0, 1.0, 1.0, 1.05, 1.3, 1.55, 1.8, 2.2, 2.3)   # 4 rows for a step's price, then ~a quarter a row
    >>> best_draft_length(8, 0.6, 0.7, avx2), best_draft_length(8, 0.98, 1.0, avx2)
    (3, 8)
    >>> best_draft_length(8, 0.02, 0.5, (1.0, 1.05))   # a draft that is hardly ever right is not worth a row
    0
    """
    best_length, best_rate = 0, 1.0 / row_costs[0]
    expected, reach = 1.0, first_rate
    for length in range(1, min(available, len(row_costs) - 1) + 1):
        expected += reach
        reach *= next_rate
        rate = expected / row_costs[length]
        if rate > best_rate * (1 + 1e-9):
            best_length, best_rate = length, rate
    return best_length


@dataclass
class AcceptanceTally:
    """How often lookup drafts come true, learned while serving: for each drafting state, how often the
    target takes a draft's first token, and, once it has taken one, the next.

    Counts fade (``memory``: each new draft weighs the past by that factor), so the rates follow the code
    being written rather than the session's first hour; the priors (hits, misses) stand for the first drafts.

    >>> tally = AcceptanceTally()
    >>> tally.record("fresh", drafted=4, taken=4)   # all four taken: 1 first-token hit, 3 next-token hits
    >>> tally.record("fresh", drafted=4, taken=1)   # first taken, the second not: a hit, then a miss
    >>> [round(rate, 2) for rate in tally.rates("fresh")]
    [0.75, 0.75]
    """

    prior_first: tuple[float, float] = (1.0, 1.0)
    prior_next: tuple[float, float] = (3.0, 1.0)
    memory: float = 0.98
    _first: dict[Any, tuple[float, float]] = field(default_factory=dict)
    _next: dict[Any, tuple[float, float]] = field(default_factory=dict)

    def rates(self, state: Any) -> tuple[float, float]:
        """(first-token rate, next-token rate) in ``state``."""
        (fh, fm), (nh, nm) = self._first.get(state, self.prior_first), self._next.get(state, self.prior_next)
        return fh / (fh + fm), nh / (nh + nm)

    def record(self, state: Any, drafted: int, taken: int) -> None:
        """A draft of ``drafted`` tokens drafted in ``state`` of which the target took the first ``taken``."""
        if drafted <= 0:
            return
        keep = self.memory
        hits, misses = self._first.get(state, self.prior_first)
        self._first[state] = (keep * hits + (taken > 0), keep * misses + (taken == 0))
        if taken > 0:
            trials = min(taken + 1, drafted) - 1  # tokens after the first whose fate the pass showed
            hits, misses = self._next.get(state, self.prior_next)
            self._next[state] = (keep * hits + taken - 1, keep * misses + trials - (taken - 1))


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


@dataclass
class DraftPricing:
    """What the lookup drafter weighs to size a draft: the price of a pass by rows on this machine at this
    prompt's length (``engine.pass_costs``, a step = 1) and how often its drafts have come true
    (``AcceptanceTally``, shared by an engine's requests so that it learns the model and the code)."""

    row_costs: tuple[float, ...]
    tally: AcceptanceTally = field(default_factory=AcceptanceTally)

    def length(self, available: int, state: Any) -> int:
        return best_draft_length(available, *self.tally.rates(state), self.row_costs)


class PromptLookup:
    """Continue the longest recent n-gram match (``max_ngram`` down to ``min_ngram`` tokens).

    The corpus is what the prompt holds (repository context, prefix, suffix)
    plus, as it grows, the suggestion itself; a match's continuation is the
    draft. Later occurrences win: the text nearest the cursor is the best guess.

    How much of a match to draft: with ``pricing``, the length that brings the
    most tokens per unit of time (``best_draft_length``), from the pass prices
    and the rates at which drafts came true in the same state: whether the last
    draft came true whole (a copy under way) and how long the matched n-gram is.
    Without it, drafts hold ``first_draft`` tokens at first; one the target takes
    whole doubles the next (up to ``max_draft``), one it rejects sets the next to
    what it took plus one (at least ``first_draft``).
    """

    name = "lookup"

    max_candidates = 4  # occurrences of one n-gram tried, latest first

    def __init__(self, corpus: Sequence[Sequence[int]], *, max_draft: int = 8, min_ngram: int = 2, max_ngram: int = 4,
                 first_draft: int | None = None, pricing: DraftPricing | None = None) -> None:
        assert 1 <= min_ngram <= max_ngram, (min_ngram, max_ngram)
        self.max_draft, self.min_ngram, self.max_ngram = max_draft, min_ngram, max_ngram
        self.first_draft = max_draft if first_draft is None else max(1, min(first_draft, max_draft))
        self.pricing = pricing
        self._draft_limit = self.first_draft
        self._last_draft: tuple[int, tuple[int, ...], Any] | None = None  # (tokens generated before it, the draft, its state)
        self._whole = False  # the last draft came true whole
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
        self._draft_limit, self._last_draft, self._whole = self.first_draft, None, False

    def _learn(self, generated: Sequence[int]) -> None:
        """Take in the last draft's fate: how much of it the target took."""
        if self._last_draft is None:
            self._whole = False
            return
        before, draft, state = self._last_draft
        taken = tokens_agreeing(draft, generated, before)
        self._whole = taken == len(draft)
        if self.pricing is not None:
            self.pricing.tally.record(state, len(draft), taken)
        else:
            self._draft_limit = min(self.max_draft, 2 * self._draft_limit) if self._whole else max(self.first_draft, taken + 1)
        self._last_draft = None

    def continuations(self, generated: Sequence[int], limit: int, most: int = 1) -> list[tuple[int, ...]]:
        """Up to ``most`` distinct continuations of the text's last n-gram, best first (longer match, then
        later occurrence), each at most ``limit`` tokens and the draft length chosen now. The first is the
        draft ``propose`` makes; the others are what a tree of candidates would verify beside it."""
        self._learn(generated)
        limit = min(limit, self.max_draft if self.pricing is not None else self._draft_limit)
        seen = len(self._text) - self._generated_from
        if seen < len(generated):
            self._extend(generated[seen:])  # the suggestion so far is corpus too
        if limit <= 0:
            return []
        found: list[tuple[int, ...]] = []
        matched = 0
        key_source = (self._history + list(generated))[-self.max_ngram :]
        for n in range(min(self.max_ngram, len(key_source)), self.min_ngram - 1, -1):
            for end in reversed(self._where.get(tuple(key_source[-n:]), ())[-self.max_candidates :]):
                stop = next((e for e in self._segment_ends if e >= end), len(self._text))
                if stop > end:  # something follows this occurrence within its piece (not the key itself)
                    tokens = tuple(self._text[end : min(stop, end + limit)])
                    matched = matched or n
                    if tokens not in found:
                        found.append(tokens)
                    if len(found) == most:
                        break
            if len(found) == most:
                break
        state = None
        if found and self.pricing is not None:
            state = self._drafting_state(matched)
            length = self.pricing.length(len(found[0]), state)
            found = list(dict.fromkeys(c[:length] for c in found if length))
        if found:
            self._last_draft = (len(generated), found[0], state)
        return found

    def _drafting_state(self, matched: int) -> Any:
        """What the acceptance rates are kept apart by: whether the last draft came true whole, and the
        length of the n-gram matched (1, 2, 3 or more tokens)."""
        return (self._whole, min(matched, 3))

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
