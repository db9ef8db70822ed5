"""Superposed decoding: k distinct suggestions from one pass per step; k = 1 is plain greedy."""

from __future__ import annotations

import pytest
import torch

from engine.decode import decode
from engine.stops import CompletionContext
from engine.superpose import NgramModel, superposed_decode
from engine.types import CompletionOptions, Scope

BLOCK = CompletionContext(prefix="", suffix="", scope=Scope.BLOCK, max_lines=10_000)
PROMPTS = ["def add(a, b):\n    return", "for i in range(10):\n    print(", "import os\nimport sys\n\n"]


@pytest.mark.parametrize("prompt", PROMPTS)
def test_one_draft_is_plain_greedy(tiny_model, tokenizer, prompt):
    ids = tokenizer(prompt).input_ids
    *_, plain = decode(tiny_model, ids, BLOCK, CompletionOptions(max_tokens=12))
    result = superposed_decode(tiny_model, ids, BLOCK, k=1, max_tokens=12, ngram_weight=0.0)
    assert len(result.suggestions) == 1
    assert result.suggestions[0].token_ids == plain.token_ids and result.suggestions[0].text == plain.text


@pytest.mark.parametrize("k", [2, 3, 5])
def test_k_distinct_suggestions_from_one_pass_per_step(tiny_model, tokenizer, k):
    ids = tokenizer(PROMPTS[0]).input_ids
    result = superposed_decode(tiny_model, ids, BLOCK, k=k, max_tokens=10,
                               ngrams=NgramModel([ids], order=3), ngram_weight=0.3)
    texts = [s.text for s in result.suggestions]
    assert len(texts) == len(set(texts)) >= 2
    assert result.passes <= 10  # one forward per step, whatever k is
    scores = [s.score for s in result.suggestions]
    assert scores == sorted(scores, reverse=True)
    # the first step is exact: first tokens are among the prompt's top-k
    with torch.inference_mode():
        top = set(torch.topk(tiny_model.model(torch.tensor([ids])).logits[0, -1], k).indices.tolist())
    assert all(s.token_ids[0] in top for s in result.suggestions if s.token_ids)


def test_ngram_model_prefers_what_the_corpus_continues():
    ngrams = NgramModel([[5, 6, 7, 5, 6, 7, 5, 6, 8]], order=3)
    assert ngrams.probability([5, 6], 7) > ngrams.probability([5, 6], 8) > ngrams.probability([5, 6], 42) > 0
    assert ngrams.probability([], 5) > ngrams.probability([], 42)


def test_beam_search_of_width_one_is_greedy(tiny_model, tokenizer):
    from cache import kv
    from evals.bench_suggestions import beam_search

    ids = tokenizer(PROMPTS[1]).input_ids
    cache = kv.new_cache(tiny_model.model.config)
    kv.encode(tiny_model.model, cache, ids[:-1])
    *_, plain = decode(tiny_model, ids, BLOCK, CompletionOptions(max_tokens=10))
    (text, _score), = beam_search(tiny_model, kv.snapshot(cache), ids[-1], BLOCK, 1, 10)
    assert text == plain.text


def test_bench_suggestions_reports_every_method(tiny_model):
    from evals.bench_suggestions import bench_suggestions

    report = bench_suggestions(ks=(2,), limit=2, loaded=tiny_model, run_tests=False, max_tokens=8)
    assert set(report["results"]) == {"superposed@2", "sampled@2", "beam@2"}
    for row in report["results"].values():
        assert row["tasks"] == 2 and 1 <= row["mean_distinct"] <= 2 and row["time_vs_greedy"] > 0
