"""The engine's KV sessions end to end (tiny model): modes agree where they must."""

import time

import pytest

from cache.session import SessionPolicy
from engine.engine import CompletionEngine
from engine.errors import InvalidInput
from engine.types import CompletionOptions, CompletionRequest, Position, Range, Scope, TextEdit

URI = "file:///proj/calc.py"
TEXT = "def total(values):\n    result = 0\n    for value in values:\n        result += value\n    return result\n"


def final(engine, position, mode, uri=URI):
    options = CompletionOptions(max_tokens=12, scope=Scope.BLOCK, cache_mode=mode)
    chunk = None
    for chunk in engine.complete(CompletionRequest("r-" + mode, uri, position, options=options)):
        pass
    return chunk


@pytest.fixture
def engine(tiny_model):
    engine = CompletionEngine(tiny_model, background=False)
    engine.open_document(URI, "python", 1, TEXT)
    yield engine
    engine.close()


def test_prefix_mode_gives_exactly_the_recompute_completion(engine):
    position = Position(2, 4)
    reference = final(engine, position, "recompute")
    prefix = final(engine, position, "prefix")
    assert (prefix.text, prefix.generated_tokens) == (reference.text, reference.generated_tokens)
    assert (reference.cache_mode, prefix.cache_mode) == ("recompute", "prefix")
    # the session served the prompt: only <|fim_middle|> was encoded for the request
    assert prefix.timings.encoded_tokens == 1 and prefix.timings.prompt_tokens == reference.timings.prompt_tokens


def test_after_edits_prefix_still_matches_recompute_and_pie_answers(engine):
    final(engine, Position(1, 0), "pie")  # creates and encodes the session
    engine.edit_document(URI, 2, [TextEdit(Range(Position(1, 4), Position(1, 10)), "acc")])
    engine.edit_document(URI, 3, [TextEdit(Range(Position(4, 0), Position(4, 0)), "    # done\n")])
    session = engine.sessions.get(URI)
    assert session.has_queued_edits  # no background worker here: applied at the next request
    position = Position(3, 8)
    reference = final(engine, position, "recompute")
    assert final(engine, position, "prefix").text == reference.text
    pie = final(engine, position, "pie")
    assert pie.done and pie.cache_mode == "pie" and pie.timings.encoded_tokens == 1
    assert session.tokens.text == engine.documents.get(URI).text


def test_background_worker_patches_edits_between_requests(tiny_model):
    engine = CompletionEngine(tiny_model, policy=SessionPolicy(idle_refresh_seconds=0.0))
    try:
        engine.open_document(URI, "python", 1, TEXT)
        deadline = time.monotonic() + 20
        while (engine.sessions.get(URI) is None or not engine.sessions.get(URI).fully_encoded) and time.monotonic() < deadline:
            time.sleep(0.05)
        session = engine.sessions.get(URI)
        assert session is not None and session.fully_encoded  # encoded on open, before any request
        engine.edit_document(URI, 2, [TextEdit(Range(Position(0, 4), Position(0, 9)), "sum_all")])
        while (session.has_queued_edits or session.stale_from is not None) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not session.has_queued_edits and session.stale_from is None  # patched, then refreshed when idle
        assert session.tokens.text == engine.documents.get(URI).text
    finally:
        engine.close()


def test_unknown_cache_mode_is_refused(engine):
    with pytest.raises(InvalidInput, match="cache_mode"):
        final(engine, Position(0, 0), "sometimes")


def test_closing_frees_the_session(engine):
    final(engine, Position(0, 0), "pie")
    assert engine.sessions.get(URI) is not None
    engine.close_document(URI)
    assert engine.sessions.get(URI) is None


def test_documents_over_the_session_limit_use_a_windowed_prompt(tiny_model):
    engine = CompletionEngine(tiny_model, policy=SessionPolicy(max_document_tokens=10), background=False)
    engine.open_document(URI, "python", 1, TEXT)
    assert final(engine, Position(2, 4), "pie").cache_mode == "window"


def test_anchored_engine_typing_at_the_cursor_is_exact_after_the_idle_refresh(tiny_model):
    engine = CompletionEngine(tiny_model, policy=SessionPolicy(fim_anchor=True, idle_refresh_seconds=0.0))
    try:
        engine.open_document(URI, "python", 1, TEXT)
        final(engine, Position(3, 8), "pie")  # the marker goes in at the cursor
        session = engine.sessions.get(URI)
        engine.edit_document(URI, 2, [TextEdit(Range(Position(3, 8), Position(3, 8)), "result ")])  # typing there
        deadline = time.monotonic() + 20
        while (session.has_queued_edits or session.stale_from is not None) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert session.anchor == TEXT.index("result += value") + len("result ")  # right after the typed text
        position = Position(3, 15)
        pie = final(engine, position, "pie")
        reference = final(engine, position, "recompute")
        assert pie.timings.encoded_tokens == 1 and (pie.text, pie.generated_tokens) == (reference.text, reference.generated_tokens)
    finally:
        engine.close()
