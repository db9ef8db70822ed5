"""What happened to a suggestion: the event records telemetry stores and reports read.

Why one flat record: every question the team asks ("does arm B get accepted
more often?", "does PIE hurt persistence?") is a count over events grouped by a
few fields, so each event carries the experiment arm and the engine path that
produced the suggestion, not a pointer to some other table.

A suggestion's life: ``shown`` once, then at most one outcome, ``accepted``
(``accepted_chars`` < ``shown_chars`` for a partial accept) or ``rejected``
(dismissed, typed over, replaced by another suggestion); an accepted one gets a
``persisted`` check later (``kept``: is the inserted text still there?).

No source code is recorded unless the user opts in (``text`` stays None).

Example::

    >>> e = Event("accepted", "s1", 1700000000.0, user="u", arm="b", accepted_chars=4, shown_chars=9)
    >>> Event.from_json(e.to_json()) == e
    True
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

KINDS = ("shown", "accepted", "rejected", "persisted")


@dataclass(frozen=True)
class Event:
    kind: str  # one of KINDS
    suggestion_id: str
    time: float  # Unix seconds
    user: str = ""  # anonymous id (a hash), what experiment arms are assigned by
    experiment: str | None = None
    arm: str | None = None
    language: str = ""
    model: str = ""
    cache_mode: str = ""  # the engine path: "pie" | "prefix" | "recompute" | "window"
    speculation: str = ""  # "off" | "lookup" | "draft" | "combined"
    suggestions: int = 1  # k asked of the engine
    shown_chars: int = 0
    accepted_chars: int = 0  # accepted: how much of the suggestion was taken
    latency_ms: float = 0.0  # shown: keystroke (request) to suggestion
    kept: bool | None = None  # persisted: still in the document after the delay
    similarity: float | None = None  # persisted: how much of it survived (1 = untouched)
    typed_ahead: bool = False  # shown: served from the typed-ahead cache, no engine call
    text: str | None = None  # the suggestion, only when the user opted in to sharing code

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"event kind must be one of {', '.join(KINDS)}, got {self.kind!r}")

    def to_json(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if v is not None}, sort_keys=True)

    @classmethod
    def from_json(cls, line: str) -> Event:
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in json.loads(line).items() if k in known}
        return cls(**data)


__all__ = ["Event", "KINDS"]
