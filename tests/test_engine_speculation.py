"""Speculation through the engine: same suggestions as plain decoding in every cache mode, across edits."""

from __future__ import annotations

import pytest

from engine.engine import CompletionEngine
from engine.errors import InvalidInput
from engine.types import CompletionOptions, CompletionRequest, Position, Range, Scope, TextEdit
from tests.test_speculate import noisy_copy

URI = "file:///proj/stats.py"
TEXT = (
    "def mean(values):\n    return sum(values) / len(values)\n\n\n"
    "def variance(values):\n    m = mean(values)\n    return sum((v - m) ** 2 for v in values) / len(values)\n\n\n"
    "def report(values):\n    print(mean(values))\n    \n"
)
EDITS = [
    TextEdit(Range(Position(11, 4), Position(11, 4)), "print(variance(values))\n    "),
    TextEdit(Range(Position(0, 4), Position(0, 8)), "average"),
]


@pytest.fixture(scope="module")
def draft(tiny_model):
    return noisy_copy(tiny_model, 0.3, 4)


def session_run(engine: CompletionEngine, mode: str, speculation: str | None) -> list:
    """Open, complete, edit twice, complete again at two places: the final chunks."""
    engine.open_document(URI, "python", 1, TEXT)
    finals = []
    positions = [Position(11, 4), Position(12, 4), Position(5, 4)]
    try:
        for step, position in enumerate(positions):
            options = CompletionOptions(max_tokens=20, scope=Scope.BLOCK, cache_mode=mode, speculation=speculation)
            chunk = None
            for chunk in engine.complete(CompletionRequest(f"r{step}", URI, position, options=options)):
                pass
            finals.append(chunk)
            if step < len(EDITS):
                engine.edit_document(URI, step + 2, [EDITS[step]])
    finally:
        engine.close_document(URI)
    return finals


@pytest.mark.parametrize("mode", ["pie", "prefix", "recompute"])
@pytest.mark.parametrize("speculation", ["lookup", "draft", "combined"])
def test_speculative_suggestions_equal_plain_ones(tiny_model, draft, mode, speculation):
    plain_engine = CompletionEngine(tiny_model, background=False, speculation="off")
    fast_engine = CompletionEngine(tiny_model, background=False, draft_model=draft, speculation=speculation)
    plain = session_run(plain_engine, mode, None)
    fast = session_run(fast_engine, mode, None)
    assert [c.text for c in fast] == [c.text for c in plain]
    assert [c.generated_tokens for c in fast] == [c.generated_tokens for c in plain]
    assert {c.speculation for c in plain} == {"off"} and {c.speculation for c in fast} == {speculation}
    assert all(c.timings.target_passes <= p.timings.target_passes for c, p in zip(fast, plain))
    if speculation != "lookup":
        assert sum(c.timings.drafted_tokens for c in fast) > 0
    plain_engine.close()
    fast_engine.close()


def test_draft_sessions_follow_the_edits(tiny_model, draft):
    engine = CompletionEngine(tiny_model, background=False, draft_model=draft, speculation="draft")
    engine.open_document(URI, "python", 1, TEXT)
    options = CompletionOptions(max_tokens=8, scope=Scope.BLOCK)
    list(engine.complete(CompletionRequest("a", URI, Position(11, 4), options=options)))
    engine.edit_document(URI, 2, [EDITS[0]])
    list(engine.complete(CompletionRequest("b", URI, Position(12, 4), options=options)))
    target, twin = engine.sessions.get(URI), engine.draft_sessions.get(URI)
    assert twin is not None and twin.tokens.text == target.tokens.text == engine.documents.get(URI).text
    assert twin.header_ids == target.header_ids and twin.cache is not None
    engine.close_document(URI)
    assert engine.draft_sessions.get(URI) is None
    engine.close()


def test_a_request_can_choose_its_speculation(tiny_model, draft):
    engine = CompletionEngine(tiny_model, background=False, draft_model=draft, speculation="off")
    engine.open_document(URI, "python", 1, TEXT)
    chunks = {}
    for speculation in ("off", "draft"):
        options = CompletionOptions(max_tokens=12, scope=Scope.BLOCK, speculation=speculation)
        *_, chunks[speculation] = engine.complete(CompletionRequest(speculation, URI, Position(11, 4), options=options))
    assert chunks["draft"].speculation == "draft" and chunks["draft"].timings.drafted_tokens > 0
    assert chunks["off"].timings.drafted_tokens == 0 and chunks["draft"].text == chunks["off"].text
    engine.close()


def test_lookup_is_the_default(tiny_model):
    engine = CompletionEngine(tiny_model, background=False)
    engine.open_document(URI, "python", 1, TEXT)
    *_, chunk = engine.complete(CompletionRequest("d", URI, Position(11, 4), options=CompletionOptions(max_tokens=4)))
    assert engine.speculation == "lookup" and chunk.speculation == "lookup"
    engine.close()


def test_speculation_errors_are_clear(tiny_model):
    with pytest.raises(InvalidInput, match="needs a draft model"):
        CompletionEngine(tiny_model, background=False, speculation="draft")
    with pytest.raises(InvalidInput, match="speculation must be one of"):
        CompletionEngine(tiny_model, background=False, speculation="fast")
    engine = CompletionEngine(tiny_model, background=False)
    engine.open_document(URI, "python", 1, TEXT)
    with pytest.raises(InvalidInput, match="needs a draft model"):
        list(engine.complete(CompletionRequest("x", URI, Position(11, 4), options=CompletionOptions(speculation="combined"))))
    with pytest.raises(InvalidInput, match="speculation must be one of"):
        list(engine.complete(CompletionRequest("y", URI, Position(11, 4), options=CompletionOptions(speculation="warp"))))
    engine.close()


@pytest.mark.parametrize("mode", ["pie", "recompute"])
def test_k_suggestions_come_in_one_final_chunk(tiny_model, mode):
    engine = CompletionEngine(tiny_model, background=False)
    engine.open_document(URI, "python", 1, TEXT)
    options = CompletionOptions(max_tokens=10, scope=Scope.BLOCK, cache_mode=mode, suggestions=3)
    chunks = list(engine.complete(CompletionRequest("k3", URI, Position(11, 4), options=options)))
    assert len(chunks) == 1 and chunks[0].done
    texts = [chunks[0].text, *chunks[0].alternatives]
    assert 2 <= len(texts) <= 3 and len(set(texts)) == len(texts)
    plain = list(engine.complete(CompletionRequest("k1", URI, Position(11, 4), options=CompletionOptions(
        max_tokens=10, scope=Scope.BLOCK, cache_mode=mode))))[-1]
    assert plain.alternatives == () and plain.text  # one suggestion unless asked
    with pytest.raises(InvalidInput, match="suggestions must be in 1..8"):
        list(engine.complete(CompletionRequest("k0", URI, Position(11, 4), options=CompletionOptions(suggestions=0))))
    engine.close()


def test_lookup_drafts_are_priced_by_the_engines_pass_costs(tiny_model, monkeypatch):
    from engine import engine as engine_module
    from engine.pass_costs import PassCosts
    from engine.speculate import SpeculationSettings

    costs = PassCosts(keys=(256, 2048), seconds=(tuple(0.01 * (1 + 0.1 * r) for r in range(9)),
                                                  tuple(0.02 * (1 + 0.3 * r) for r in range(9))))
    measured = []
    monkeypatch.setattr(engine_module, "pass_costs_for", lambda loaded: measured.append(loaded.name) or costs)
    engine = CompletionEngine(tiny_model, background=False)
    try:
        engine.warm_up()
        assert measured == [tiny_model.name]  # measured (or read) once, before the first completion
        greedy = CompletionOptions(max_tokens=8)
        short, _ = engine._proposer("lookup", greedy, TEXT, "", [], URI, None, keys=300)
        long, _ = engine._proposer("lookup", greedy, TEXT, "", [], URI, None, keys=1800)
        assert short.min_ngram == 1 and short.pricing.row_costs == costs.relative(300)
        assert long.pricing.row_costs == costs.relative(1800) and long.pricing.row_costs[8] > short.pricing.row_costs[8]
        assert short.pricing.tally is long.pricing.tally  # one tally learns from every request
        sampled, _ = engine._proposer("lookup", CompletionOptions(max_tokens=8, temperature=0.7), TEXT, "", [], URI, None, keys=300)
        assert sampled.pricing.tally is not short.pricing.tally  # sampling accepts differently: its own
        assert measured == [tiny_model.name]
    finally:
        engine.close()
    growing = CompletionEngine(tiny_model, background=False, speculation_settings=SpeculationSettings(lookup_first_draft=2))
    try:
        proposer, _ = growing._proposer("lookup", CompletionOptions(max_tokens=8), TEXT, "", [], URI, None, keys=300)
        assert proposer.pricing is None and proposer.first_draft == 2  # asked for the growing rule: no prices needed
        assert measured == [tiny_model.name]
    finally:
        growing.close()

