"""The offline lookup replay makes exactly the passes the decode loop makes."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from engine.decode import decode
from engine.speculate import PromptLookup
from engine.stops import CompletionContext
from engine.types import CompletionOptions, Scope
from evals.lookup_replay import LookupPolicy, ReplayTask, predicted_speedup, replay

BLOCK = CompletionContext(prefix="", suffix="", scope=Scope.BLOCK, max_lines=10_000)
STOP, MARK, MIDDLE, VOCAB = 1, 2, 3, 128
PREFIX = [10, 11, 12, 13, 14, 15, 16, 10, 11]
SUFFIX = [50, 51, 52, 53, 54]
# The target's greedy choice after each token: it copies the prompt for a while, then leaves it (15 -> 99, not 16;
# 52 -> 60, not 53), so lookup drafts come true, half true and wrong.
NEXT = {MIDDLE: 12, 12: 13, 13: 14, 14: 15, 15: 99, 99: 50, 50: 51, 51: 52, 52: 60, 60: 61, 61: 10, 10: 11, 11: 12}


class Bigram:
    """A fake LM whose greedy next token depends on the last token only; one dummy cache row per fed token."""

    def __init__(self, config):
        self.config = config

    def __call__(self, input_ids, past_key_values=None, use_cache=True, logits_to_keep=1, **_):
        fed = input_ids[0].tolist()
        for layer in range(self.config.num_hidden_layers):
            past_key_values.update(torch.zeros(1, 1, len(fed), 2), torch.zeros(1, 1, len(fed), 2), layer)
        logits = torch.full((1, logits_to_keep, VOCAB), -1e4)
        for row, token in enumerate(fed[len(fed) - logits_to_keep :]):
            logits[0, row, NEXT.get(token, STOP)] = 0.0
        return SimpleNamespace(logits=logits)


class Letters:
    def decode(self, ids, skip_special_tokens=False):
        return "".join(chr(ord("a") + i % 26) for i in ids)


@pytest.mark.parametrize("policy", [LookupPolicy(max_draft=8), LookupPolicy(max_draft=8, first_draft=2),
                                    LookupPolicy(max_draft=8, first_draft=1, min_ngram=3), LookupPolicy(max_draft=3, min_ngram=1)])
def test_replay_makes_the_passes_the_decode_loop_makes(tiny_model, policy):
    loaded = SimpleNamespace(model=Bigram(tiny_model.model.config), tokenizer=Letters(), device=torch.device("cpu"),
                             stop_token_ids=frozenset({STOP}))
    ids = [*PREFIX, MARK, *SUFFIX, MIDDLE]
    marker = ids.index(MARK)
    options = CompletionOptions(max_tokens=24)
    plain = list(decode(loaded, ids, BLOCK, options))[-1]
    lookup = PromptLookup([ids[:marker], ids[marker + 1 : -1]], max_draft=policy.max_draft, min_ngram=policy.min_ngram,
                          first_draft=policy.first_draft)
    real = list(decode(loaded, ids, BLOCK, options, proposer=lookup, history=ids[:marker]))[-1]
    assert real.token_ids == plain.token_ids and len(plain.token_ids) == options.max_tokens
    assert 0 < real.accepted_tokens < real.drafted_tokens  # some drafts came true, some did not
    rows = replay(ReplayTask("t", tuple(ids), marker, options.max_tokens, plain.token_ids), policy)
    assert len(rows) == real.target_forwards
    assert sum(rows) - len(rows) == real.drafted_tokens


def test_predicted_speedup_prices_each_pass_by_its_rows():
    task = ReplayTask("t", (5, 6, 7, 5, 6, 0, 1), 5, 8, (7, 5, 6, 7))
    assert replay(task, LookupPolicy(max_draft=4)) == [3]  # "5 6" drafted after "7", both right: 4 tokens, 2 passes
    costs = {1: 1.0, 2: 1.5, 3: 2.0}
    assert predicted_speedup([task], costs, LookupPolicy(max_draft=4)) == pytest.approx(3 * 1.0 / 2.0)



# The draft model's greedy choice after each token: the target's, except after 15 (guesses 16) and 52 (guesses 53);
# after its own wrong guesses it knows nothing (a flat distribution, below any confidence threshold), so its
# drafts stop at their first wrong token, as the replay assumes.
DRAFT_NEXT = {**NEXT, 15: 16, 52: 53}


class BigramDraft(Bigram):
    def parameters(self):
        yield torch.zeros(1)

    def __call__(self, input_ids, past_key_values=None, use_cache=True, logits_to_keep=1, **_):
        fed = input_ids[0].tolist()
        for layer in range(self.config.num_hidden_layers):
            past_key_values.update(torch.zeros(1, 1, len(fed), 2), torch.zeros(1, 1, len(fed), 2), layer)
        logits = torch.zeros((1, logits_to_keep, VOCAB))
        for row, token in enumerate(fed[len(fed) - logits_to_keep :]):
            if token in DRAFT_NEXT:
                logits[0, row] = -1e4
                logits[0, row, DRAFT_NEXT[token]] = 0.0
        return SimpleNamespace(logits=logits)


@pytest.mark.parametrize("lookup", [None, LookupPolicy(max_draft=8, min_ngram=2)])
@pytest.mark.parametrize("max_draft", [2, 4])
def test_draft_replay_makes_the_passes_and_draft_forwards_the_decode_loop_makes(tiny_model, lookup, max_draft):
    from cache import kv
    from engine.speculate import Combined, DraftModel
    from evals.lookup_replay import draft_predictions, replay_draft

    config = tiny_model.model.config
    target = SimpleNamespace(model=Bigram(config), tokenizer=Letters(), device=torch.device("cpu"), stop_token_ids=frozenset({STOP}))
    draft = SimpleNamespace(model=BigramDraft(config), device=torch.device("cpu"))
    ids = [*PREFIX, MARK, *SUFFIX, MIDDLE]
    marker = ids.index(MARK)
    options = CompletionOptions(max_tokens=24)
    plain = list(decode(target, ids, BLOCK, options))[-1]
    cache = kv.new_cache(config)
    kv.encode(draft.model, cache, ids[:-1])
    model = DraftModel(draft.model, cache, [ids[-1]], max_draft=max_draft, min_confidence=0.5)
    proposer = model if lookup is None else Combined(
        PromptLookup([ids[:marker], ids[marker + 1 : -1]], max_draft=lookup.max_draft, min_ngram=lookup.min_ngram), model)
    real = list(decode(target, ids, BLOCK, options, proposer=proposer, history=ids[:marker]))[-1]
    assert real.token_ids == plain.token_ids and len(plain.token_ids) == options.max_tokens
    assert 0 < real.accepted_tokens < real.drafted_tokens and model.forwards > 0

    choice, confidence = draft_predictions(draft, ids, plain.token_ids)
    task = ReplayTask("t", tuple(ids), marker, options.max_tokens, plain.token_ids, choice, confidence)
    passes = replay_draft(task, max_draft, 0.5, lookup)
    assert len(passes) == real.target_forwards
    assert sum(rows - 1 for rows, _ in passes) == real.drafted_tokens
    assert sum(len(feeds) for _, feeds in passes) == model.forwards
