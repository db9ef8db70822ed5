"""Document sessions: PIE against full recompute, prefix exactness, FIM splice, LRU.

All on the tiny random Qwen2 (2 layers): what matters is the arithmetic of
the patch, not the quality of the model.
"""

import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cache import kv
from cache.session import DocumentSession, ModelHandle, SessionPolicy, SessionStore
from cache.tokens import CharEdit, tokenize
from engine.prompt import build_fim_prompt, session_header_ids

TEXT = "import os\n\n\ndef total(values):\n    result = 0\n    for value in values:\n        result += value\n    return result\n\n\nprint(total([1, 2, 3]))\n"
PIE = SessionPolicy(mode="pie")
PREFIX = SessionPolicy(mode="prefix")


@pytest.fixture(scope="module")
def handle(tiny_model):
    return ModelHandle.of(tiny_model)


@pytest.fixture(scope="module")
def header(tiny_model):
    return session_header_ids(tiny_model.tokenizer, tiny_model.family, "calc.py")


def fresh_cache(handle, header, text):
    """The slow reference: encode header + text from scratch."""
    cache = kv.new_cache(handle.model.config)
    kv.encode(handle.model, cache, header + tokenize(handle.tokenizer, text)[0])
    return cache


def session(handle, header, text=TEXT):
    s = DocumentSession(handle, text, header)
    s.ensure_encoded()
    return s


def layer_close(a, b, layer, atol):
    ka, va = a.layers[layer].keys, a.layers[layer].values
    kb, vb = b.layers[layer].keys, b.layers[layer].values
    return ka.shape == kb.shape and torch.allclose(ka, kb, atol=atol) and torch.allclose(va, vb, atol=atol)


EDITS = {
    "insert": [CharEdit(48, 48, "    count = 0\n")],
    "delete": [CharEdit(TEXT.index("    result = 0\n"), TEXT.index("    for"), "")],
    "replace": [CharEdit(TEXT.index("values):"), TEXT.index("values):") + 6, "numbers")],
    "multi": [CharEdit(TEXT.index("result = 0"), TEXT.index("result = 0") + 6, "acc"),
              CharEdit(TEXT.index("result += ") - 3, TEXT.index("result += ") + 3, "acc"),
              CharEdit(TEXT.index("return result") - 6, TEXT.index("return result") + 7, "return acc")],
}


@pytest.mark.parametrize("kind", list(EDITS))
def test_pie_layer0_keys_equal_full_recompute(handle, header, kind):
    s = session(handle, header)
    stats = s.apply_edits(EDITS[kind], PIE)
    assert stats is not None and stats.encoded_tokens < len(s.tokens) / 2  # only the edit was encoded
    reference = fresh_cache(handle, header, s.tokens.text)
    # layer 0 depends on token and position only: PIE must reproduce it
    assert layer_close(s.cache, reference, 0, atol=1e-4)
    assert s.stale_from is not None  # deeper layers after the edit are approximate


@pytest.mark.parametrize("kind", list(EDITS))
def test_prefix_mode_and_refresh_are_exact_on_every_layer(handle, header, kind):
    s = session(handle, header)
    s.apply_edits(EDITS[kind], PREFIX)
    s.ensure_encoded()
    reference = fresh_cache(handle, header, s.tokens.text)
    assert all(layer_close(s.cache, reference, i, atol=1e-4) for i in range(len(reference.layers)))
    p = session(handle, header)
    p.apply_edits(EDITS[kind], PIE)
    p.refresh()
    assert p.stale_from is None
    assert all(layer_close(p.cache, reference, i, atol=1e-4) for i in range(len(reference.layers)))


def test_pie_equals_recompute_when_the_edit_is_at_the_end(handle, header):
    s = session(handle, header)
    s.apply_edits([CharEdit(len(TEXT), len(TEXT), "print(total([4]))\n")], PIE)
    reference = fresh_cache(handle, header, s.tokens.text)
    assert all(layer_close(s.cache, reference, i, atol=1e-4) for i in range(len(reference.layers)))
    fork, rest = s.fim_fork(len(s.tokens.text), "pie")
    ref_ids = build_fim_prompt(handle.tokenizer, _family(handle), s.tokens.text, "", path="calc.py", budget=None).token_ids
    ref_cache = kv.new_cache(handle.model.config)
    ref_logits = kv.encode(handle.model, ref_cache, ref_ids)
    assert torch.allclose(kv.encode(handle.model, fork, rest), ref_logits, atol=1e-4)


def _family(handle):
    from engine.registry import load_registry

    return load_registry().model("qwen2.5-coder-0.5b").family


@pytest.mark.parametrize("cursor", [0, 17, TEXT.index("in values") + 3, len(TEXT)])
def test_fim_fork_holds_exactly_the_fim_prompt(handle, header, cursor):
    s = session(handle, header)
    fork, rest = s.fim_fork(cursor, "prefix")
    ids = build_fim_prompt(handle.tokenizer, _family(handle), TEXT[:cursor], TEXT[cursor:], path="calc.py", budget=None).token_ids
    assert kv.length(fork) + len(rest) == len(ids)
    reference = kv.new_cache(handle.model.config)
    expected = kv.encode(handle.model, reference, ids)
    assert torch.allclose(kv.encode(handle.model, fork, rest), expected, atol=1e-4)
    assert kv.length(s.cache) == len(header) + len(s.tokens)  # the session itself is untouched


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_random_edit_sequences_keep_tokens_and_cache_in_step(handle, header, data):
    s = session(handle, header)
    rng = random.Random(data.draw(st.integers(0, 10_000)))
    snippets = ["x", " ", "\n", "    ", "foo(bar)", "é", "😀", "\n\n", "return 1\n", ""]
    for _ in range(data.draw(st.integers(1, 4))):
        text = s.tokens.text
        start = rng.randint(0, len(text))
        end = rng.randint(start, min(len(text), start + 12))
        s.queue_edits([CharEdit(start, end, rng.choice(snippets))])
        s.sync(data.draw(st.sampled_from([PIE, PREFIX])))
        assert s.tokens.ids == tokenize(handle.tokenizer, s.tokens.text)[0]
        if s.fully_encoded:
            assert kv.length(s.cache) == len(header) + len(s.tokens)
        s.ensure_encoded()
        assert kv.length(s.cache) == len(header) + len(s.tokens)
    reference = fresh_cache(handle, header, s.tokens.text)
    assert layer_close(s.cache, reference, 0, atol=1e-4)


def test_lru_drops_least_recently_used_caches_over_budget(handle, header):
    one = session(handle, header)
    policy = SessionPolicy(memory_budget_bytes=int(one.bytes * 2.5))
    store = SessionStore(policy)
    for uri in "abc":
        store.put(uri, session(handle, header))
    store.get("a")  # a is now the most recently used: b goes first
    assert store.enforce_budget() == 1
    assert store.get("b").cache is None and store.get("a").cache is not None
    revived = store.get("b")
    revived.ensure_encoded()  # evicted documents are re-encoded on next use
    assert kv.length(revived.cache) == len(header) + len(revived.tokens)
    store.pop("c")
    assert store.total_bytes() == 2 * one.bytes


def test_staleness_accounting_and_refresh_due(handle, header):
    s = session(handle, header)
    policy = SessionPolicy(stale_budget=6, idle_refresh_seconds=3600)
    s.apply_edits([CharEdit(48, 48, "\n")], policy)  # one blank line: a couple of tokens change
    assert 0 < s.changed_tokens <= 6 and not s.refresh_due(policy)
    s.apply_edits([CharEdit(48, 48, "    a_long_new_line = compute(values)\n")], policy)
    assert s.changed_tokens > 6 and s.refresh_due(policy)
    assert s.refresh(max_rows=5) == 5 and s.stale_from is not None  # one bounded step
    s.refresh()
    assert s.stale_from is None and s.changed_tokens == 0 and not s.refresh_due(policy)


@pytest.mark.parametrize("kind", list(EDITS))
def test_pending_edit_and_fim_split_in_one_pass(handle, header, kind):
    """A request that arrives before the edit was patched: one pass encodes both."""
    s = session(handle, header)
    s.record_edits(EDITS[kind])
    assert s.pending is not None and s.has_queued_edits
    text = s.tokens.text
    cursor = text.index("for value") + 3
    ids = build_fim_prompt(handle.tokenizer, _family(handle), text[:cursor], text[cursor:], path="calc.py", budget=None).token_ids
    reference = kv.new_cache(handle.model.config)
    expected = kv.encode(handle.model, reference, ids)
    exact, rest = s.clone().fim_fork(cursor, "prefix")
    assert torch.allclose(kv.encode(handle.model, exact, rest), expected, atol=1e-4)
    approx, rest = s.fim_fork(cursor, "pie")
    kv.crop_to(reference, len(ids) - 1)
    assert layer_close(approx, reference, 0, atol=1e-4)
    assert kv.length(s.cache) == len(header) + len(s.cache_ids)  # session rows untouched, still pending
    s.sync(PIE)
    assert s.pending is None and s.cache_ids == s.tokens.ids


def test_suffix_window_fork_is_exact_when_only_the_suffix_is_cut(handle, header):
    """With exact rows before the cursor, a pie fork with a suffix window equals a
    fresh encode of header + prefix + FS + the first W suffix tokens."""
    s = session(handle, header)
    cursor = TEXT.index("for value") + 3
    fork, rest = s.fim_fork(cursor, "pie", suffix_window=5)
    split_ids = build_fim_prompt(handle.tokenizer, _family(handle), TEXT[:cursor], TEXT[cursor:], path="calc.py", budget=None).token_ids
    marker = split_ids.index(handle.fim_suffix_id)
    reference = kv.new_cache(handle.model.config)
    expected = kv.encode(handle.model, reference, split_ids[: marker + 1 + 5] + rest)
    assert kv.length(fork) == marker + 1 + 5
    assert torch.allclose(kv.encode(handle.model, fork, rest), expected, atol=1e-4)


def split_ids(handle, text, cursor):
    """The slow reference of an anchored session's ids: prefix, <|fim_suffix|>, suffix, tokenized apart."""
    return tokenize(handle.tokenizer, text[:cursor])[0] + [handle.fim_suffix_id] + tokenize(handle.tokenizer, text[cursor:])[0]


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_anchored_sessions_keep_the_marker_at_the_cursor_through_edits_and_requests(handle, header, data):
    s = session(handle, header)
    rng = random.Random(data.draw(st.integers(0, 10_000)))
    snippets = ["x", " ", "\n", "foo(bar)", "é", "\n\n", "return 1\n", ""]
    for _ in range(data.draw(st.integers(1, 5))):
        s.absorb_queued()  # as the engine does before reading the text a cursor refers to
        text = s.tokens.text
        if rng.random() < 0.5:  # a completion request somewhere
            cursor = rng.randint(0, len(text))
            fork, rest = s.fim_fork(cursor, "pie", refresh_window=rng.choice([0, 4]), anchor=True)
            assert s.anchor == cursor and s.cache_ids == split_ids(handle, text, cursor)
            assert kv.length(fork) == len(header) + len(s.cache_ids) and rest == [handle.fim_middle_id]
        else:  # an edit, patched now or left pending
            start = rng.randint(0, len(text))
            end = rng.randint(start, min(len(text), start + 12))
            typed = rng.choice(snippets)
            s.queue_edits([CharEdit(start, end, typed)])
            if rng.random() < 0.5:
                s.sync(PIE)
            s.absorb_queued()
            if s.anchor is not None:
                assert s.anchor == start + len(typed)  # the marker follows the typing
    s.sync(PIE)
    expected = split_ids(handle, s.tokens.text, s.anchor) if s.anchor is not None else tokenize(handle.tokenizer, s.tokens.text)[0]
    assert s.cache_ids == expected and s.tokens.ids == tokenize(handle.tokenizer, s.tokens.text)[0]
    s.ensure_encoded()
    reference = kv.new_cache(handle.model.config)
    kv.encode(handle.model, reference, header + expected)
    assert layer_close(s.cache, reference, 0, atol=1e-4)  # PIE: layer 0 exact
    s.refresh()
    for layer in range(len(reference.layers)):
        assert layer_close(s.cache, reference, layer, atol=1e-4)  # refreshed: every layer exact


def test_an_anchored_request_at_the_same_place_encodes_nothing_and_prefix_forks_stay_exact(handle, header):
    s = session(handle, header)
    cursor = TEXT.index("in values") + 3
    s.fim_fork(cursor, "pie", anchor=True)
    rows = kv.snapshot(s.cache)
    s.fim_fork(cursor, "pie", anchor=True)
    assert all(a is b for (a, _), (b, _) in zip(rows, kv.snapshot(s.cache)))  # no patch, same tensors
    # a prefix-mode request elsewhere on the anchored session: the exact FIM prompt
    other = TEXT.index("return result")
    fork, rest = s.fim_fork(other, "prefix")
    ids = build_fim_prompt(handle.tokenizer, _family(handle), TEXT[:other], TEXT[other:], path="calc.py", budget=None).token_ids
    reference = kv.new_cache(handle.model.config)
    assert torch.allclose(kv.encode(handle.model, fork, rest), kv.encode(handle.model, reference, ids), atol=1e-4)
    assert s.anchor == cursor  # prefix requests leave the session alone
