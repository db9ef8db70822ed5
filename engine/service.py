"""The gRPC server: livefim.v1.CompletionEngine over a CompletionEngine, plus health.

Why a thin servicer: all behaviour lives in CompletionEngine; this file only
converts messages (through engine.adapters), turns each EngineError into its
gRPC status with the engine's message, and keeps serving everyone else when one
request fails. A client that cancels or disconnects mid-stream cancels the
decode too, so an abandoned completion stops costing model time.

Example::

    running = start_server(CompletionEngine(load_model()))   # 127.0.0.1, ephemeral port
    client = EngineClient(running.address)
    ...
    running.stop()
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
import time
import uuid
from concurrent import futures
from dataclasses import dataclass, replace
from typing import Iterator, NoReturn

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from cache.session import SessionPolicy
from engine import adapters
from engine.client import CHANNEL_OPTIONS, SERVICE_NAME
from engine.engine import CompletionEngine
from engine.errors import EngineError
from engine.proto.livefim.v1 import engine_pb2 as pb
from engine.proto.livefim.v1 import engine_pb2_grpc

log = logging.getLogger(__name__)


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    context.abort(code, message)
    raise AssertionError("context.abort returned")  # it always raises


@contextlib.contextmanager
def _status(context: grpc.ServicerContext, method: str) -> Iterator[None]:
    """EngineError -> its status and message; anything else -> INTERNAL, logged."""
    try:
        yield
    except EngineError as error:
        _abort(context, error.code, str(error))
    except Exception as error:
        log.exception("%s failed unexpectedly", method)
        _abort(context, grpc.StatusCode.INTERNAL, f"{method}: internal error: {type(error).__name__}: {error}")


class CompletionEngineServicer(engine_pb2_grpc.CompletionEngineServicer):
    """Delegates each RPC to a CompletionEngine."""

    def __init__(self, engine: CompletionEngine) -> None:
        self.engine = engine

    def OpenDocument(self, request: pb.OpenDocumentRequest, context: grpc.ServicerContext) -> pb.DocumentState:
        with _status(context, "OpenDocument"):
            value = adapters.open_document_from_proto(request)
            state = self.engine.open_document(value.uri, value.language_id, value.version, value.text)
            return adapters.document_state_to_proto(state)

    def EditDocument(self, request: pb.EditDocumentRequest, context: grpc.ServicerContext) -> pb.DocumentState:
        with _status(context, "EditDocument"):
            value = adapters.edit_document_from_proto(request)
            state = self.engine.edit_document(value.uri, value.version, value.edits)
            return adapters.document_state_to_proto(state)

    def CloseDocument(
        self, request: pb.CloseDocumentRequest, context: grpc.ServicerContext
    ) -> pb.CloseDocumentResponse:
        with _status(context, "CloseDocument"):
            self.engine.close_document(request.uri)
            return pb.CloseDocumentResponse()

    def Complete(self, request: pb.CompleteRequest, context: grpc.ServicerContext) -> Iterator[pb.CompleteResponse]:
        with _status(context, "Complete"):
            completion = adapters.completion_request_from_proto(request)
            if not completion.request_id:
                completion = replace(completion, request_id=uuid.uuid4().hex)
            request_id = completion.request_id
            finished = threading.Event()

            def on_rpc_end() -> None:
                # Runs when the RPC ends for any reason; only a stream that did not
                # finish (client cancelled, disconnected, deadline) stops the decode.
                if not finished.is_set():
                    self.engine.cancel(request_id)

            context.add_callback(on_rpc_end)
            chunks = self.engine.complete(completion)
            try:
                for chunk in chunks:
                    if chunk.done:
                        finished.set()
                    if not context.is_active():
                        self.engine.cancel(request_id)
                        return
                    yield adapters.completion_chunk_to_proto(chunk)
            finally:
                finished.set()
                chunks.close()

    def Cancel(self, request: pb.CancelRequest, context: grpc.ServicerContext) -> pb.CancelResponse:
        with _status(context, "Cancel"):
            return pb.CancelResponse(cancelled=self.engine.cancel(request.request_id))


@dataclass
class RunningServer:
    """A started server: where it listens and how to stop it."""

    server: grpc.Server
    health: health.HealthServicer
    host: str
    port: int

    @property
    def address(self) -> str:
        """``host:port``, ready for EngineClient / grpc.insecure_channel."""
        return f"{self.host}:{self.port}"

    def stop(self, grace: float | None = 2.0) -> None:
        """Report NOT_SERVING, let in-flight calls finish for ``grace`` seconds, then stop."""
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()

    def wait(self) -> None:
        """Block until the server has stopped."""
        self.server.wait_for_termination()


def _split_address(address: str) -> tuple[str, str]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"address must be HOST:PORT, got {address!r}")
    return host, port


def start_server(engine: CompletionEngine, address: str = "127.0.0.1:0", max_workers: int = 8) -> RunningServer:
    """Serve ``engine`` on ``address`` (port 0: an ephemeral port) with the health service; returns at once."""
    host, _ = _split_address(address)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers), options=CHANNEL_OPTIONS)
    engine_pb2_grpc.add_CompletionEngineServicer_to_server(CompletionEngineServicer(engine), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as error:
        raise OSError(f"cannot listen on {address}: {error}") from error
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    server.start()
    for service in ("", SERVICE_NAME):
        health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    return RunningServer(server=server, health=health_servicer, host=host, port=port)


def serve(
    port: int,
    host: str = "127.0.0.1",
    model: str | None = None,
    device: str | None = None,
    policy: SessionPolicy | None = None,
    repo_context: "RepoContext | None" = None,
    draft_model: str | None = None,
    speculation: str = "lookup",
) -> None:
    """``livefim serve``: load and warm the model, serve until SIGINT/SIGTERM, then stop gracefully."""
    from engine.runtime import load_model

    draft = (lambda: load_model(draft_model, device, install_missing=True)) if draft_model else None
    engine = CompletionEngine(lambda: load_model(model, device, install_missing=True), policy=policy, repo_context=repo_context,
                              draft_model=draft, speculation=speculation)
    engine.warm_up()
    bind_host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    running = start_server(engine, f"{bind_host}:{port}")
    loaded = engine.model
    print(
        f"livefim engine serving {SERVICE_NAME} on {running.address} "
        f"(model {loaded.name} on {loaded.device}, cache mode {engine.policy.mode}, speculation {engine.speculation})",
        file=sys.stderr,
        flush=True,
    )
    signalled: list[int] = []  # a handler only appends: taking locks inside one can deadlock
    previous = {
        sig: signal.signal(sig, lambda number, _frame: signalled.append(number))
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        while not signalled:
            time.sleep(0.2)
    finally:
        running.stop(grace=5.0)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
