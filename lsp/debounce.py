"""How long to wait after a keystroke before asking the engine: adapted to how fast this user types.

Why adaptive: a request sent while the user is still typing is wasted (the
next keystroke supersedes it) and occupies the model; one sent long after they
stopped feels slow. The gap between keystrokes tells which: wait a little
longer than the user's usual gap (``factor`` x the median of recent gaps), so a
burst of typing sends one request at its end, and a pause is answered almost
at once. Gaps over ``pause_s`` are pauses, not typing rhythm, and don't count.

Example: keystrokes every 100 ms -> wait 150 ms; every 300 ms -> 400 ms (the cap)::

    >>> cadence = TypingCadence()
    >>> for t in (0.0, 0.1, 0.2, 0.3, 0.4):
    ...     cadence.keystroke(t)
    >>> round(cadence.delay_s(), 3)
    0.15
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass, field


@dataclass
class TypingCadence:
    factor: float = 1.5
    min_s: float = 0.03
    max_s: float = 0.4
    default_s: float = 0.15  # before there is any rhythm to go by
    pause_s: float = 1.5
    window: int = 20
    _last: float | None = None
    _gaps: deque[float] = field(default_factory=lambda: deque(maxlen=20))

    def keystroke(self, at: float) -> None:
        """A change arrived at monotonic time ``at``."""
        if self._last is not None:
            gap = at - self._last
            if 0 <= gap <= self.pause_s:
                self._gaps.append(gap)
        self._last = at

    def delay_s(self, fixed_ms: float | None = None) -> float:
        """Seconds to wait before a request; ``fixed_ms`` (the user's setting) wins when given."""
        if fixed_ms is not None:
            return fixed_ms / 1000.0
        if len(self._gaps) < 3:
            return self.default_s
        return min(self.max_s, max(self.min_s, self.factor * statistics.median(self._gaps)))


__all__ = ["TypingCadence"]
