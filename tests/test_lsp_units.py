"""The language server's pieces on literal inputs: suggestion ledger, persistence, typed-ahead, debounce, settings."""

from __future__ import annotations

from lsp.debounce import TypingCadence
from lsp.settings import Settings
from lsp.suggestions import SuggestionLedger
from lsp.typed_ahead import TypedAheadCache
from telemetry.events import Event


class ListStore:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def write(self, events):  # noqa: ANN001
        self.events += events

    def read(self):
        return iter(self.events)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def ledger(delay_s: float = 30.0):  # noqa: ANN201
    from telemetry.store import Recorder

    store, clock = ListStore(), Clock()
    recorder = Recorder(store, interval_s=3600)
    book = SuggestionLedger(recorder, clock=clock, persistence_delay_s=delay_s)
    book.set_context("u1", "exp", "arm-b", share_code=False)
    return book, recorder, store, clock


def kinds(recorder, store) -> list[tuple[str, str]]:  # noqa: ANN001
    recorder.flush()
    return [(e.kind, e.suggestion_id) for e in store.events]


def test_accept_and_reject_are_recorded_as_what_they_are():
    book, recorder, store, _ = ledger()
    a = book.new("file:///a.py", 10, "a + b", "python", cache_mode="pie")
    b = book.new("file:///a.py", 10, "a - b", "python", cache_mode="pie")
    book.shown(a.suggestion_id)
    book.accepted(a.suggestion_id, None, None)
    book.shown(b.suggestion_id)
    book.rejected(b.suggestion_id)
    assert kinds(recorder, store) == [("shown", a.suggestion_id), ("accepted", a.suggestion_id),
                                      ("shown", b.suggestion_id), ("rejected", b.suggestion_id)]
    assert book.rejected(a.suggestion_id) is False  # an accepted one can't be rejected afterwards
    assert all((e.arm, e.experiment, e.user, e.text) == ("arm-b", "exp", "u1", None) for e in store.events)


def test_showing_another_suggestion_rejects_the_one_on_screen_and_closing_rejects_the_last():
    book, recorder, store, _ = ledger()
    first = book.new("file:///a.py", 0, "x", "python")
    second = book.new("file:///a.py", 0, "y", "python")
    book.shown(first.suggestion_id)
    book.shown(second.suggestion_id)
    book.document_closed("file:///a.py")
    assert kinds(recorder, store) == [("shown", first.suggestion_id), ("rejected", first.suggestion_id),
                                      ("shown", second.suggestion_id), ("rejected", second.suggestion_id)]


def test_partial_accept_records_the_accepted_length():
    book, recorder, store, _ = ledger()
    s = book.new("file:///a.py", 0, "return a + b", "python")
    book.accepted(s.suggestion_id, 6, None)  # accepting without a show: it was on screen
    recorder.flush()
    assert [(e.kind, e.accepted_chars, e.shown_chars) for e in store.events] == [("shown", 0, 12), ("accepted", 6, 12)]


def _accept(book, text_before: str, offset: int, suggestion: str):  # noqa: ANN001, ANN202
    record = book.new("file:///a.py", offset, suggestion, "python")
    book.shown(record.suggestion_id)
    document = text_before[:offset] + suggestion + text_before[offset:]
    book.accepted(record.suggestion_id, None, document)
    return record, document


def test_persistence_follows_edits_before_the_accepted_text():
    book, recorder, store, clock = ledger(delay_s=30)
    record, document = _accept(book, "def f(a, b):\n    return \n", 21, "a + b")
    # 5 characters inserted before it: the accepted text moves, untouched
    book.edited("file:///a.py", 0, 0, "# hi\n")
    document = "# hi\n" + document
    clock.now += 31
    assert book.due_checks(lambda uri: document) == 1
    recorder.flush()
    persisted = [e for e in store.events if e.kind == "persisted"][0]
    assert (persisted.kept, persisted.similarity, persisted.suggestion_id) == (True, 1.0, record.suggestion_id)


def test_persistence_sees_the_accepted_text_rewritten():
    book, recorder, store, clock = ledger(delay_s=30)
    _, document = _accept(book, "x = \n", 4, "compute_total(items)")
    start = 4
    book.edited("file:///a.py", start, start + 20, "0")  # the user replaced it all
    document = document[:start] + "0" + document[start + 20:]
    clock.now += 31
    book.due_checks(lambda uri: document)
    recorder.flush()
    persisted = [e for e in store.events if e.kind == "persisted"][0]
    assert persisted.kept is False and persisted.similarity < 0.2


def test_no_check_before_the_delay_and_none_for_a_closed_document():
    book, recorder, store, clock = ledger(delay_s=30)
    _, document = _accept(book, "x = \n", 4, "1")
    clock.now += 10
    assert book.due_checks(lambda uri: document) == 0
    book.document_closed("file:///a.py")
    clock.now += 100
    assert book.due_checks(lambda uri: document) == 0


def test_typed_ahead_serves_the_rest_only_for_the_suggestions_own_characters():
    cache = TypedAheadCache()
    cache.remember("u", 4, "    re", "turn x\n    y", "s1")
    assert cache.lookup("u", 4, "    ret") == ("urn x\n    y", "s1")
    assert cache.lookup("u", 4, "    return x") == ("\n    y", "s1")
    assert cache.lookup("u", 4, "    rex") is None
    assert cache.lookup("u", 5, "    ret") is None  # another line
    assert cache.lookup("u", 4, "    re") is None  # nothing typed: the editor asks again for a reason
    assert cache.hits == 2 and cache.lookups == 5


def test_debounce_follows_the_typing_rhythm():
    cadence = TypingCadence()
    assert cadence.delay_s() == cadence.default_s
    for i in range(10):
        cadence.keystroke(i * 0.08)
    assert abs(cadence.delay_s() - 0.12) < 1e-9  # 1.5 x 80 ms
    cadence.keystroke(10.0)  # a pause is not rhythm
    assert abs(cadence.delay_s() - 0.12) < 1e-9
    assert cadence.delay_s(fixed_ms=250) == 0.25


def test_settings_take_good_values_and_report_bad_ones():
    settings, problems = Settings().merged({"engine": "", "model": "qwen2.5-coder-1.5b", "maxLines": 0,
                                            "telemetry": {"shareCode": True, "store": "redis://h:1/0", "enabled": "yes"}})
    assert settings.engine is None and settings.model == "qwen2.5-coder-1.5b" and settings.max_lines == 12
    assert settings.share_code is True and settings.telemetry_store == "redis://h:1/0" and settings.telemetry_enabled is True
    assert problems == ["maxLines must be an integer from 1 to 200, got 0", "telemetry.enabled must be true or false, got 'yes'"]
