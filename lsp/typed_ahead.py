"""Typed-ahead: when the user types the first characters of the suggestion on screen, the rest is still right.

Why: after ``retu`` is shown ``rn a + b``, typing ``r`` makes the editor ask
again. The engine would spend a forward pass (and the user a debounce) to
rediscover ``n a + b``. The cache answers at once: same line, the text before
the cursor grew by exactly what the suggestion began with, so the remainder is
served under the same suggestion id (still one suggestion for telemetry).

Example::

    >>> cache = TypedAheadCache()
    >>> cache.remember("file:///a.py", 3, "    retu", "rn a + b", "s1")
    >>> cache.lookup("file:///a.py", 3, "    retur")
    ('n a + b', 's1')
    >>> cache.lookup("file:///a.py", 3, "    retx") is None  # typed something else
    True
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class _Shown:
    line: int
    line_prefix: str  # text of the line before the cursor when the suggestion was made
    text: str
    suggestion_id: str


class TypedAheadCache:
    """The last suggestion per document; a lookup serves what remains of it after the user's typing."""

    def __init__(self) -> None:
        self._by_uri: dict[str, _Shown] = {}
        self.hits = 0
        self.lookups = 0

    def remember(self, uri: str, line: int, line_prefix: str, text: str, suggestion_id: str) -> None:
        if text:
            self._by_uri[uri] = _Shown(line, line_prefix, text, suggestion_id)

    def lookup(self, uri: str, line: int, line_prefix: str) -> tuple[str, str] | None:
        """(remaining text, suggestion id) when ``line_prefix`` extends the shown one by the suggestion's own start."""
        self.lookups += 1
        shown = self._by_uri.get(uri)
        if shown is None or shown.line != line or not line_prefix.startswith(shown.line_prefix):
            return None
        typed = line_prefix[len(shown.line_prefix):]
        first_line = shown.text.split("\n", 1)[0]
        if not typed or not first_line.startswith(typed) or len(typed) >= len(shown.text):
            return None
        self.hits += 1
        return shown.text[len(typed):], shown.suggestion_id

    def forget(self, uri: str) -> None:
        self._by_uri.pop(uri, None)


__all__ = ["TypedAheadCache"]
