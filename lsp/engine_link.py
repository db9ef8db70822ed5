"""The language server's connection to a completion engine: remote, or embedded in this process.

Why: the LSP layer talks to the engine only through the gRPC contract, so the
engine can run on another machine (``--engine HOST:PORT``). With no address we
start the engine in this process behind a local gRPC server and talk to it the
same way: one code path, and the embedded default needs no second command.

Environment (embedded engine only):

- ``LIVEFIM_MODEL``: registry model name (default: the registry default).
- ``LIVEFIM_TINY_MODEL=1``: a tiny random model instead (tests; meaningless output).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.client import EngineClient

if TYPE_CHECKING:
    from engine.engine import CompletionEngine
    from engine.service import RunningServer

REMOTE_READY_TIMEOUT_S = 10.0


@dataclass
class EngineConnection:
    """A client for the engine, plus the embedded engine and server when this process owns them."""

    client: EngineClient
    address: str
    engine: CompletionEngine | None = None  # set when embedded
    server: RunningServer | None = None  # set when embedded

    @classmethod
    def open(cls, address: str | None = None, model: str | None = None) -> EngineConnection:
        """Connect to ``address`` (``host:port``), or start an embedded engine when it is None/empty."""
        if address:
            return cls(client=EngineClient(address), address=address)
        return cls.embedded(model)

    @classmethod
    def embedded(cls, model: str | None = None) -> EngineConnection:
        """An engine in this process; the model loads on ``warm_up`` or the first completion."""
        from engine.engine import CompletionEngine
        from engine.runtime import load_model, load_tiny_random_model
        from engine.service import start_server

        name = model or os.environ.get("LIVEFIM_MODEL") or None
        if os.environ.get("LIVEFIM_TINY_MODEL", "") not in ("", "0"):
            engine = CompletionEngine(lambda: load_tiny_random_model(name))
        else:
            engine = CompletionEngine(lambda: load_model(name, install_missing=True))
        server = start_server(engine, "127.0.0.1:0")
        address = f"127.0.0.1:{server.port}"
        return cls(client=EngineClient(address), address=address, engine=engine, server=server)

    @property
    def is_embedded(self) -> bool:
        return self.engine is not None

    def warm_up(self) -> None:
        """Blocking: load the embedded model now, or wait until a remote engine answers.

        Raises the engine's error (ModelUnavailable) when it cannot get ready.
        """
        if self.engine is not None:
            self.engine.warm_up()
        self.client.wait_ready(REMOTE_READY_TIMEOUT_S)

    def describe(self) -> str:
        """For the client's log; call after ``warm_up`` (it names the loaded model)."""
        if self.engine is None:
            return f"engine at {self.address}"
        return f"embedded engine ({self.engine.model.name}) on {self.address}"

    def close(self) -> None:
        """Close the channel; stop the embedded server (in-flight calls get a moment to end)."""
        self.client.close()
        if self.server is not None:
            self.server.stop(grace=1.0)


class EngineLink:
    """An ``EngineConnection`` plus whether the engine is reachable now.

    Why: when a remote engine dies or restarts, every keystroke would otherwise
    become a failed call and an error in the editor. Instead the first failure
    that a health probe confirms marks the link down (one message), calls are
    skipped while it is down (the mirrors keep the truth), a background thread
    probes with backoff, and once the engine answers ``on_back`` runs (the
    server re-sends every open document, in order with later edits) and the link
    is up again (one message). A failure the probe does not confirm (the engine
    answers but, say, its model failed to load) is the engine's own error and is
    reported as such.
    """

    def __init__(self, connection: EngineConnection, on_down, on_back, probe_timeout_s: float = 1.0,  # noqa: ANN001
                 max_backoff_s: float = 5.0) -> None:
        import threading

        self.connection = connection
        self._on_down, self._on_back = on_down, on_back
        self.probe_timeout_s, self.max_backoff_s = probe_timeout_s, max_backoff_s
        self._up = True
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._prober = None
        self.outages = 0

    @property
    def client(self) -> EngineClient:
        return self.connection.client

    @property
    def up(self) -> bool:
        return self._up

    def reachable(self) -> bool:
        """Blocking: does the engine answer a health check now?"""
        try:
            self.connection.client.wait_ready(self.probe_timeout_s)
            return True
        except Exception:  # noqa: BLE001 - unreachable in any way
            return False

    def failed(self, error: Exception) -> bool:
        """Blocking (call off the event loop): after an UNAVAILABLE error, True when the engine is unreachable
        (the link is then down and reconnecting), False when it answers (the error is the engine's own)."""
        import threading

        from engine.errors import ModelUnavailable

        if not isinstance(error, ModelUnavailable) or self._stopped.is_set():
            return False
        with self._lock:
            if not self._up:
                return True
        if self.reachable():
            return False
        with self._lock:
            if not self._up:
                return True
            self._up = False
            self.outages += 1
            self._prober = threading.Thread(target=self._reconnect, name="livefim-engine-reconnect", daemon=True)
            self._prober.start()
        self._on_down(error)
        return True

    def mark_up(self) -> None:
        """The documents are back on the engine: calls go through again."""
        with self._lock:
            self._up = True

    def resync_failed(self) -> None:
        """Re-sending the documents failed: stay down and probe again."""
        import threading

        with self._lock:
            self._up = False
            if self._stopped.is_set() or (self._prober is not None and self._prober.is_alive()):
                return
            self._prober = threading.Thread(target=self._reconnect, name="livefim-engine-reconnect", daemon=True)
            self._prober.start()

    def _reconnect(self) -> None:
        backoff = 0.2
        while not self._stopped.is_set():
            if self.reachable():
                self._on_back()  # queues the re-sending of the documents, which then calls mark_up
                return
            self._stopped.wait(backoff)
            backoff = min(self.max_backoff_s, backoff * 2)

    def close(self) -> None:
        self._stopped.set()
        self.connection.close()
