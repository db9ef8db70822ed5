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
