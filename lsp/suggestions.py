"""The life of each suggestion the server hands out: shown, accepted or rejected, and still there later.

Why in the language server: it is the one place that sees both the engine's
answer (which arm, cache mode, speculation produced it) and every later edit of
the document, which is what "still present N seconds after acceptance"
(persistence) needs. Clients only say what the user did:

- ``livefim/didShow`` ``{"id"}``: the suggestion is on screen;
- ``livefim/didAccept`` ``{"id", "acceptedLength"?}`` (or the item's command
  ``livefim.accept``): taken, wholly or its first ``acceptedLength`` characters;
- ``livefim/didReject`` ``{"id"}``: dismissed.

A shown suggestion without an outcome is rejected when another suggestion of
the same document is shown, when the document closes, or at shutdown.

Persistence: at accept time the accepted text is found in the document near
where the suggestion was made; later edits move or reshape that range; after
the delay the range's text is compared with what was accepted (similarity of
the two, 1 = untouched) and ``kept`` means at least ``KEEP_SIMILARITY``.
"""

from __future__ import annotations

import difflib
import time
import uuid
from dataclasses import dataclass
from typing import Callable

from telemetry.events import Event
from telemetry.store import Recorder

KEEP_SIMILARITY = 0.8
FIND_WINDOW = 2000  # characters around the expected offset searched for accepted text


@dataclass
class SuggestionRecord:
    """What the server knows about one suggestion it returned."""

    suggestion_id: str
    uri: str
    offset: int  # cursor offset (code points) in the document when the engine answered
    text: str
    language: str
    model: str = ""
    cache_mode: str = ""
    speculation: str = ""
    suggestions: int = 1
    latency_ms: float = 0.0
    typed_ahead: bool = False
    served_from: int = 0  # typed-ahead: characters of ``text`` the user typed before the remainder was served
    shown: bool = False
    outcome: str | None = None  # "accepted" | "rejected"


@dataclass
class _Tracked:
    suggestion: SuggestionRecord
    text: str  # what was accepted
    start: int
    end: int
    due: float


@dataclass
class _Context:
    user: str = ""
    experiment: str | None = None
    arm: str | None = None
    share_code: bool = False


class SuggestionLedger:
    """Suggestion ids, their telemetry events, and the persistence checks of accepted ones."""

    def __init__(self, recorder: Recorder, clock: Callable[[], float] = time.time, persistence_delay_s: float = 30.0) -> None:
        self.recorder = recorder
        self.clock = clock
        self.persistence_delay_s = persistence_delay_s
        self.context = _Context()
        self._records: dict[str, SuggestionRecord] = {}
        self._last_shown: dict[str, str] = {}  # uri -> id of the suggestion on screen
        self._tracked: list[_Tracked] = []
        self._unplaced: list[tuple[SuggestionRecord, str, float]] = []  # accepted, text not in the document yet

    def set_context(self, user: str, experiment: str | None, arm: str | None, share_code: bool) -> None:
        self.context = _Context(user, experiment, arm, share_code)

    # -- the server's side --------------------------------------------------
    def new(self, uri: str, offset: int, text: str, language: str, **engine_path) -> SuggestionRecord:  # noqa: ANN003
        record = SuggestionRecord(f"s-{uuid.uuid4().hex[:16]}", uri, offset, text, language, **engine_path)
        self._records[record.suggestion_id] = record
        if len(self._records) > 10_000:  # forget the oldest: an unbounded dict is a leak in a long session
            for old in list(self._records)[:1000]:
                self._records.pop(old, None)
        return record

    def get(self, suggestion_id: str) -> SuggestionRecord | None:
        return self._records.get(suggestion_id)

    # -- what the client says -------------------------------------------------
    def shown(self, suggestion_id: str) -> bool:
        record = self._records.get(suggestion_id)
        if record is None:
            return False
        previous = self._last_shown.get(record.uri)
        if previous is not None and previous != suggestion_id:
            self.rejected(previous)
        self._last_shown[record.uri] = suggestion_id
        if not record.shown:
            record.shown = True
            self._emit("shown", record, shown_chars=len(record.text), latency_ms=record.latency_ms, typed_ahead=record.typed_ahead)
        return True

    def accepted(self, suggestion_id: str, accepted_length: int | None, document_text: str | None) -> bool:
        record = self._records.get(suggestion_id)
        if record is None or record.outcome is not None:
            return False
        if not record.shown:
            self.shown(suggestion_id)  # accepting it proves it was on screen
        record.outcome = "accepted"
        length = len(record.text) if accepted_length is None else max(0, min(len(record.text), accepted_length))
        self._emit("accepted", record, shown_chars=len(record.text), accepted_chars=length)
        if self._last_shown.get(record.uri) == suggestion_id:
            del self._last_shown[record.uri]
        text = record.text[:length]
        if text.strip():
            self._unplaced.append((record, text, self.clock()))
            if document_text is not None:
                self.place_accepted(record.uri, document_text)
        return True

    def rejected(self, suggestion_id: str) -> bool:
        record = self._records.get(suggestion_id)
        if record is None or record.outcome is not None or not record.shown:
            return False
        record.outcome = "rejected"
        self._emit("rejected", record, shown_chars=len(record.text))
        if self._last_shown.get(record.uri) == suggestion_id:
            del self._last_shown[record.uri]
        return True

    def document_closed(self, uri: str) -> None:
        shown = self._last_shown.pop(uri, None)
        if shown is not None:
            self.rejected(shown)
        self._tracked = [t for t in self._tracked if t.suggestion.uri != uri]  # gone: no check
        self._unplaced = [u for u in self._unplaced if u[0].uri != uri]

    def close(self) -> None:
        for uri in list(self._last_shown):
            shown = self._last_shown.pop(uri)
            self.rejected(shown)

    # -- following the document --------------------------------------------
    def place_accepted(self, uri: str, text: str) -> None:
        """Find accepted texts not yet located in ``uri``'s current text (the insertion may arrive after the accept)."""
        still = []
        for record, accepted, since in self._unplaced:
            if record.uri != uri:
                still.append((record, accepted, since))
                continue
            start = _find_near(text, accepted, record.offset)
            if start is None:
                if self.clock() - since < 5.0:
                    still.append((record, accepted, since))
                continue  # never inserted as accepted (the client changed it at once): no check
            self._tracked.append(_Tracked(record, accepted, start, start + len(accepted), self.clock() + self.persistence_delay_s))
        self._unplaced = still

    def edited(self, uri: str, start: int, end: int, new_text: str) -> None:
        """An edit replaced ``[start, end)`` (code points, in the text before it) by ``new_text``."""
        delta = len(new_text) - (end - start)
        for tracked in self._tracked:
            if tracked.suggestion.uri != uri:
                continue
            if end <= tracked.start:  # before it (an insertion right at its start too)
                tracked.start += delta
                tracked.end += delta
            elif start >= tracked.end:
                continue
            else:  # overlaps: the range now spans whatever replaced its overlapping part
                tracked.start = min(tracked.start, start)
                tracked.end = max(start + len(new_text), tracked.end + delta)

    def due_checks(self, texts: Callable[[str], str | None]) -> int:
        """Run the persistence checks whose time has come; ``texts(uri)`` is the document now (None: closed)."""
        now = self.clock()
        done, left = [], []
        for tracked in self._tracked:
            (done if tracked.due <= now else left).append(tracked)
        self._tracked = left
        for tracked in done:
            current = texts(tracked.suggestion.uri)
            if current is None:
                continue
            region = current[max(0, tracked.start) : max(0, tracked.end)]
            similarity = difflib.SequenceMatcher(None, tracked.text, region, autojunk=False).ratio()
            self._emit("persisted", tracked.suggestion, shown_chars=len(tracked.suggestion.text), accepted_chars=len(tracked.text),
                       kept=similarity >= KEEP_SIMILARITY, similarity=round(similarity, 4))
        return len(done)

    @property
    def pending_checks(self) -> int:
        return len(self._tracked) + len(self._unplaced)

    def _emit(self, kind: str, record: SuggestionRecord, **values) -> None:  # noqa: ANN003
        context = self.context
        self.recorder.record(Event(
            kind=kind, suggestion_id=record.suggestion_id, time=self.clock(), user=context.user,
            experiment=context.experiment, arm=context.arm, language=record.language, model=record.model,
            cache_mode=record.cache_mode, speculation=record.speculation, suggestions=record.suggestions,
            text=record.text if context.share_code else None, **values,
        ))


def _find_near(text: str, needle: str, offset: int) -> int | None:
    """Start of the occurrence of ``needle`` in ``text`` nearest to ``offset`` (within FIND_WINDOW), or None."""
    low, high = max(0, offset - FIND_WINDOW), min(len(text), offset + len(needle) + FIND_WINDOW)
    best, position = None, text.find(needle, low, high)
    while position != -1:
        if best is None or abs(position - offset) < abs(best - offset):
            best = position
        position = text.find(needle, position + 1, high)
    return best


__all__ = ["KEEP_SIMILARITY", "SuggestionLedger", "SuggestionRecord"]
