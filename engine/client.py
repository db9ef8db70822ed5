"""A typed client for the livefim.v1.CompletionEngine gRPC service.

Why: callers (the LSP server, the CLI) work with engine/types.py dataclasses and
one error family, EngineError, whether the engine is in-process or remote. Every
grpc.RpcError is turned back into the EngineError subclass matching its status
code, keeping the server's message.

Example::

    client = EngineClient("127.0.0.1:50051")
    client.wait_ready(timeout=30)
    client.open_document("file:///a.py", "python", 1, "def add(a, b):\\n    return \\n")
    for chunk in client.complete(CompletionRequest("r1", "file:///a.py", Position(1, 11))):
        print(chunk.text)
"""

from __future__ import annotations

import time
from typing import Iterator

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from engine import adapters
from engine.errors import (
    Cancelled,
    DocumentAlreadyOpen,
    DocumentNotFound,
    EngineError,
    InvalidInput,
    ModelUnavailable,
    PositionOutOfRange,
    StaleVersion,
    TooLarge,
)
from engine.proto.livefim.v1 import engine_pb2 as pb
from engine.proto.livefim.v1 import engine_pb2_grpc
from engine.types import CompletionChunk, CompletionRequest, DocumentState, TextEdit

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["CompletionEngine"].full_name  # "livefim.v1.CompletionEngine"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # documents over the engine's limit must reach it to get its message
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
]

_ERRORS_BY_CODE: dict[grpc.StatusCode, type[EngineError]] = {
    error.code: error
    for error in (
        DocumentNotFound,
        DocumentAlreadyOpen,
        StaleVersion,
        PositionOutOfRange,
        InvalidInput,
        TooLarge,
        Cancelled,
        ModelUnavailable,
    )
}


def error_from_rpc(error: grpc.RpcError) -> EngineError:
    """The EngineError for a failed call: the subclass for its status code, the server's message."""
    code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = (error.details() if isinstance(error, grpc.Call) else None) or str(error)
    cls = _ERRORS_BY_CODE.get(code)
    if cls is not None:
        return cls(details)
    result = EngineError(f"{code.name}: {details}")
    result.code = code  # e.g. DEADLINE_EXCEEDED, INTERNAL: no dedicated subclass
    return result


class EngineClient:
    """Typed methods over one channel to a CompletionEngine server."""

    def __init__(self, target: str) -> None:
        self.target = target
        self._channel = grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
        self._stub = engine_pb2_grpc.CompletionEngineStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    # -- documents ---------------------------------------------------------
    def open_document(self, uri: str, language_id: str, version: int, text: str) -> DocumentState:
        message = adapters.open_document_to_proto(adapters.OpenDocument(uri, language_id, version, text))
        try:
            return adapters.document_state_from_proto(self._stub.OpenDocument(message))
        except grpc.RpcError as error:
            raise error_from_rpc(error) from None

    def edit_document(self, uri: str, version: int, edits: list[TextEdit]) -> DocumentState:
        message = adapters.edit_document_to_proto(adapters.EditDocument(uri, version, list(edits)))
        try:
            return adapters.document_state_from_proto(self._stub.EditDocument(message))
        except grpc.RpcError as error:
            raise error_from_rpc(error) from None

    def close_document(self, uri: str) -> None:
        try:
            self._stub.CloseDocument(pb.CloseDocumentRequest(uri=uri))
        except grpc.RpcError as error:
            raise error_from_rpc(error) from None

    # -- completion --------------------------------------------------------
    def complete(self, request: CompletionRequest, timeout: float | None = None) -> Iterator[CompletionChunk]:
        """Stream chunks; closing the iterator early cancels the call (and so the decode)."""
        call = self._stub.Complete(adapters.completion_request_to_proto(request), timeout=timeout)
        try:
            for message in call:
                yield adapters.completion_chunk_from_proto(message)
        except grpc.RpcError as error:
            raise error_from_rpc(error) from None
        finally:
            call.cancel()  # no-op once the stream has ended

    def cancel(self, request_id: str) -> bool:
        """Stop an in-flight completion; False when the server had no such request running."""
        try:
            return self._stub.Cancel(pb.CancelRequest(request_id=request_id)).cancelled
        except grpc.RpcError as error:
            raise error_from_rpc(error) from None

    # -- health ------------------------------------------------------------
    def health(self, timeout: float = 1.0) -> bool:
        """True when the server reports SERVING for the engine service; False if unreachable."""
        try:
            response = self._health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=timeout)
        except grpc.RpcError:
            return False
        return response.status == health_pb2.HealthCheckResponse.SERVING

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until the server is SERVING; ModelUnavailable when it is not within ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ModelUnavailable(f"engine at {self.target} not serving after {timeout:g}s")
            try:
                response = self._health.Check(
                    health_pb2.HealthCheckRequest(service=SERVICE_NAME),
                    timeout=min(remaining, 5.0),
                    wait_for_ready=True,
                )
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> EngineClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
