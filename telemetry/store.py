"""Where telemetry events go: sqlite on this machine (the default) or a Redis stream shared by a team.

Why a recorder in front of the store: the language server must never wait on,
or fail because of, telemetry. ``Recorder.record`` only appends to a bounded
in-memory queue; a background thread writes batches and, when the store is
unavailable (Redis restarting, a locked database), keeps them and retries with
backoff, so a brief outage loses nothing. Telemetry off means a
``Recorder(None)``: nothing is kept, written or sent.

Example::

    >>> import tempfile, os
    >>> store = SqliteStore(os.path.join(tempfile.mkdtemp(), "t.db"))
    >>> store.write([Event("shown", "s1", 1.0)])
    >>> [e.suggestion_id for e in store.read()]
    ['s1']
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import deque
from pathlib import Path
from typing import Iterable, Iterator, Protocol

from telemetry.events import Event

log = logging.getLogger(__name__)

DEFAULT_STREAM = "livefim:telemetry"
MAX_BUFFERED = 100_000  # events kept while the store is down; past this the oldest are dropped (and counted)


class EventStore(Protocol):
    def write(self, events: list[Event]) -> None: ...

    def read(self) -> Iterator[Event]: ...


class SqliteStore:
    """One table of JSON events, in time order; safe to open from several processes (WAL)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, time REAL, kind TEXT, body TEXT)")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=5.0)

    def write(self, events: list[Event]) -> None:
        with self._connect() as db:
            db.executemany("INSERT INTO events (time, kind, body) VALUES (?, ?, ?)", [(e.time, e.kind, e.to_json()) for e in events])

    def read(self) -> Iterator[Event]:
        with self._connect() as db:
            rows = db.execute("SELECT body FROM events ORDER BY time, id").fetchall()
        for (body,) in rows:
            yield Event.from_json(body)


class RedisStreamStore:
    """Events as entries of a Redis stream (``XADD``), one JSON field each: every engine of a team appends,
    ``livefim telemetry report --redis URL`` reads them all."""

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", stream: str = DEFAULT_STREAM) -> None:
        import redis

        self.url, self.stream = url, stream
        self._redis = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)

    def write(self, events: list[Event]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for event in events:
            pipe.xadd(self.stream, {"event": event.to_json()})
        pipe.execute()

    def read(self) -> Iterator[Event]:
        last = "-"
        while True:
            batch = self._redis.xrange(self.stream, min=last, max="+", count=1000)
            if last != "-":
                batch = batch[1:]  # xrange's min is inclusive
            if not batch:
                return
            for _, fields in batch:
                yield Event.from_json(fields[b"event"].decode("utf-8"))
            last = batch[-1][0].decode()


def open_store(spec: str | None) -> EventStore:
    """``redis://...`` (a Redis stream) or a sqlite file path; None: ``$LIVEFIM_HOME/telemetry.db``."""
    if spec and spec.startswith(("redis://", "rediss://", "unix://")):
        return RedisStreamStore(spec)
    if spec:
        return SqliteStore(spec)
    from telemetry.paths import default_database

    return SqliteStore(default_database())


class Recorder:
    """Buffers events and writes them from a background thread; ``store=None`` records nothing.

    ``flush()`` writes what is buffered now (tests, shutdown); ``close()`` flushes
    and stops the thread. ``dropped`` counts events lost to a full buffer.
    """

    def __init__(self, store: EventStore | None, *, batch: int = 200, interval_s: float = 0.5, max_backoff_s: float = 30.0) -> None:
        self.store = store
        self.batch, self.interval_s, self.max_backoff_s = batch, interval_s, max_backoff_s
        self._queue: deque[Event] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._failing_since: float | None = None
        self.dropped = 0
        self.written = 0
        self._thread: threading.Thread | None = None
        if store is not None:
            self._thread = threading.Thread(target=self._run, name="livefim-telemetry", daemon=True)
            self._thread.start()

    @property
    def enabled(self) -> bool:
        return self.store is not None

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def record(self, event: Event) -> None:
        if self.store is None:
            return
        with self._lock:
            if len(self._queue) >= MAX_BUFFERED:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append(event)
        if len(self._queue) >= self.batch:
            self._wake.set()

    def flush(self) -> bool:
        """Write everything buffered now; False (events kept) when the store refused."""
        while True:
            with self._lock:
                events = list(self._queue)[: self.batch]
            if not events or self.store is None:
                return True
            try:
                self.store.write(events)
            except Exception as error:  # noqa: BLE001 - any store failure: keep the events, retry later
                if self._failing_since is None:
                    self._failing_since = time.monotonic()
                    log.warning("telemetry store unavailable (%s); keeping %d events and retrying", error, self.pending)
                return False
            if self._failing_since is not None:
                log.info("telemetry store back after %.1f s", time.monotonic() - self._failing_since)
                self._failing_since = None
            with self._lock:
                for _ in events:
                    self._queue.popleft()
                self.written += len(events)

    def close(self, timeout_s: float = 5.0) -> None:
        self._stopped.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self.flush()

    def _run(self) -> None:
        backoff = self.interval_s
        while not self._stopped.is_set():
            self._wake.wait(backoff)
            self._wake.clear()
            ok = self.flush()
            backoff = self.interval_s if ok else min(self.max_backoff_s, max(backoff * 2, 0.25))


def read_all(stores: Iterable[EventStore]) -> list[Event]:
    """Every event of the given stores, in time order."""
    return sorted((e for store in stores for e in store.read()), key=lambda e: e.time)


__all__ = ["EventStore", "Recorder", "RedisStreamStore", "SqliteStore", "open_store", "read_all"]
