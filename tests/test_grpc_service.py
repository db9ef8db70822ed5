"""The gRPC service end to end: a real server on 127.0.0.1:0, real channels.

Most tests run the tiny random Qwen2 (its text is noise; we check the protocol,
not the suggestion). Each bad request must get its own status code and a
message, and the server must then still serve a good request on another
document. Cancellation uses a hand-written slow fake model that always writes
"x": left alone it would write 1024 of them, so stopping after a few proves the
cancel reached the decode loop.
"""

from __future__ import annotations

import itertools
import threading
import time
from types import SimpleNamespace
from typing import Any, Iterator

import grpc
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc

from engine.client import EngineClient
from engine.engine import CompletionEngine
from engine.errors import (
    DocumentAlreadyOpen,
    DocumentNotFound,
    EngineError,
    InvalidInput,
    PositionOutOfRange,
    StaleVersion,
    TooLarge,
)
from engine.proto.livefim.v1 import engine_pb2 as pb
from engine.proto.livefim.v1 import engine_pb2_grpc
from engine.runtime import LoadedModel
from engine.service import RunningServer, start_server
from engine.types import CompletionOptions, CompletionRequest, FinishReason, Position, Range, Scope, TextEdit

SOURCE = "def add(a, b):\n    return \n"  # 27 characters, 3 lines (the last one empty)
RPC_TIMEOUT = 30.0
_fresh = itertools.count()


def fresh_uri(name: str) -> str:
    return f"file:///{name}-{next(_fresh)}.py"


@pytest.fixture(scope="module")
def engine(tiny_model: LoadedModel) -> CompletionEngine:
    return CompletionEngine(tiny_model)


@pytest.fixture(scope="module")
def server(engine: CompletionEngine) -> Iterator[RunningServer]:
    running = start_server(engine)
    yield running
    running.stop(grace=0)


@pytest.fixture(scope="module")
def client(server: RunningServer) -> Iterator[EngineClient]:
    with EngineClient(server.address) as engine_client:
        engine_client.wait_ready(timeout=10)
        yield engine_client


@pytest.fixture(scope="module")
def stub(server: RunningServer) -> Iterator[engine_pb2_grpc.CompletionEngineStub]:
    """A raw stub: for what EngineClient cannot send, such as invalid UTF-8."""
    with grpc.insecure_channel(server.address) as channel:
        yield engine_pb2_grpc.CompletionEngineStub(channel)


def assert_serves_others(client: EngineClient) -> None:
    """A good open + complete on a new document still works after a bad request."""
    uri = fresh_uri("other")
    client.open_document(uri, "python", 1, SOURCE)
    request = CompletionRequest("", uri, Position(1, 11), options=CompletionOptions(max_tokens=3))
    chunks = list(client.complete(request, timeout=RPC_TIMEOUT))
    assert chunks[-1].done, chunks
    client.close_document(uri)


def raw_error(call: Any, request: Any) -> grpc.RpcError:
    """The RpcError a raw unary call fails with."""
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=RPC_TIMEOUT)
    return caught.value


# -- the happy path ------------------------------------------------------------
def test_open_edit_complete_round_trip(client: EngineClient) -> None:
    uri = fresh_uri("roundtrip")
    opened = client.open_document(uri, "python", 1, SOURCE)
    assert (opened.version, opened.characters, opened.lines) == (1, 27, 3)

    # Type "a " after "return ": 2 characters more, version 2.
    edited = client.edit_document(uri, 2, [TextEdit(Range(Position(1, 11), Position(1, 11)), "a ")])
    assert (edited.version, edited.characters) == (2, 29)

    request = CompletionRequest("round-1", uri, Position(1, 13), version=2, options=CompletionOptions(max_tokens=6, scope=Scope.LINE))
    chunks = list(client.complete(request, timeout=RPC_TIMEOUT))

    assert len(chunks) >= 2, chunks  # streamed, not one answer at the end
    assert [chunk.done for chunk in chunks] == [False] * (len(chunks) - 1) + [True]
    assert {chunk.request_id for chunk in chunks} == {"round-1"}
    assert chunks[-1].finish_reason is not FinishReason.NONE
    assert all(chunk.finish_reason is FinishReason.NONE for chunk in chunks[:-1])
    assert [chunk.generated_tokens for chunk in chunks[:-1]] == list(range(1, len(chunks)))
    assert all(later.text.startswith(earlier.text) for earlier, later in zip(chunks[:-2], chunks[1:-1]))  # cumulative
    assert chunks[-1].model == "tiny-random-qwen2" and chunks[-1].scope is Scope.LINE
    assert chunks[-1].timings.prompt_tokens > 0
    client.close_document(uri)


def test_empty_request_id_gets_one_from_the_server(client: EngineClient) -> None:
    uri = fresh_uri("noid")
    client.open_document(uri, "python", 1, SOURCE)
    chunks = list(client.complete(CompletionRequest("", uri, Position(1, 11), options=CompletionOptions(max_tokens=3)), timeout=RPC_TIMEOUT))
    ids = {chunk.request_id for chunk in chunks}
    assert len(ids) == 1 and "" not in ids, ids


def test_health_reports_serving(server: RunningServer, client: EngineClient) -> None:
    assert client.health()
    with grpc.insecure_channel(server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "livefim.v1.CompletionEngine"):
            response = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=RPC_TIMEOUT)
            assert response.status == health_pb2.HealthCheckResponse.SERVING, service
        unknown = raw_error(health.Check, health_pb2.HealthCheckRequest(service="no.such.Service"))
        assert unknown.code() == grpc.StatusCode.NOT_FOUND


# -- bad requests: each gets its own status, and the server keeps serving --------
def test_unknown_document_is_not_found(client: EngineClient, stub: engine_pb2_grpc.CompletionEngineStub) -> None:
    uri = "file:///never-opened.py"
    with pytest.raises(DocumentNotFound, match="never-opened.py is not open"):
        list(client.complete(CompletionRequest("nf", uri, Position(0, 0)), timeout=RPC_TIMEOUT))
    with pytest.raises(DocumentNotFound):
        client.edit_document(uri, 2, [])
    with pytest.raises(DocumentNotFound):
        client.close_document(uri)
    error = raw_error(stub.CloseDocument, pb.CloseDocumentRequest(uri=uri))
    assert error.code() == grpc.StatusCode.NOT_FOUND and "never-opened.py" in error.details()
    assert_serves_others(client)


def test_stale_version_edit_is_failed_precondition(client: EngineClient, engine: CompletionEngine) -> None:
    uri = fresh_uri("stale")
    client.open_document(uri, "python", 5, SOURCE)
    with pytest.raises(StaleVersion, match="edit for version 5 but the document is already at 5") as caught:
        client.edit_document(uri, 5, [TextEdit(Range(Position(0, 0), Position(0, 0)), "# ")])
    assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert engine.documents.get(uri).text == SOURCE
    assert_serves_others(client)


def test_stale_version_completion_is_failed_precondition(client: EngineClient) -> None:
    uri = fresh_uri("stale-complete")
    client.open_document(uri, "python", 3, SOURCE)
    with pytest.raises(StaleVersion, match="version 2, document is at 3"):
        list(client.complete(CompletionRequest("sc", uri, Position(1, 11), version=2), timeout=RPC_TIMEOUT))
    assert_serves_others(client)


def test_out_of_range_edit_is_out_of_range_and_changes_nothing(client: EngineClient, engine: CompletionEngine) -> None:
    uri = fresh_uri("range")
    client.open_document(uri, "python", 1, SOURCE)
    good = TextEdit(Range(Position(0, 0), Position(0, 0)), "# ")
    past_end = TextEdit(Range(Position(9, 0), Position(9, 0)), "x")  # the document has 3 lines
    with pytest.raises(PositionOutOfRange, match="line 9 is past the end of the document") as caught:
        client.edit_document(uri, 2, [good, past_end])
    assert caught.value.code == grpc.StatusCode.OUT_OF_RANGE
    # The batch is all or nothing: the good first edit was not applied either.
    assert engine.documents.get(uri).text == SOURCE
    assert engine.documents.get(uri).version == 1
    assert client.edit_document(uri, 2, [good]).characters == 29
    assert_serves_others(client)


def test_out_of_range_completion_position(client: EngineClient) -> None:
    uri = fresh_uri("range-complete")
    client.open_document(uri, "python", 1, SOURCE)
    with pytest.raises(PositionOutOfRange, match="character 40 is past the end of line 1"):
        list(client.complete(CompletionRequest("oc", uri, Position(1, 40)), timeout=RPC_TIMEOUT))
    assert_serves_others(client)


def test_invalid_utf8_in_open_is_invalid_argument(
    client: EngineClient, stub: engine_pb2_grpc.CompletionEngineStub, engine: CompletionEngine
) -> None:
    uri = fresh_uri("utf8-open")
    # b"\xff" never appears in UTF-8.
    error = raw_error(stub.OpenDocument, pb.OpenDocumentRequest(uri=uri, language_id="python", version=1, text=b"x = '\xff'\n"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == f"{uri}: document text is not valid UTF-8: byte 5 (0xff): invalid start byte"
    assert uri not in engine.documents.uris()
    assert_serves_others(client)


def test_invalid_utf8_in_edit_is_invalid_argument(
    client: EngineClient, stub: engine_pb2_grpc.CompletionEngineStub, engine: CompletionEngine
) -> None:
    uri = fresh_uri("utf8-edit")
    client.open_document(uri, "python", 1, SOURCE)
    where = pb.Range(start=pb.Position(line=1, character=11), end=pb.Position(line=1, character=11))
    ok = pb.TextEdit(range=where, text="é".encode())
    truncated = pb.TextEdit(range=where, text="é".encode()[:1])  # b"\xc3": the first half of "é"
    error = raw_error(stub.EditDocument, pb.EditDocumentRequest(uri=uri, version=2, edits=[ok, truncated]))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith(f"{uri}: text of edit 1 is not valid UTF-8: byte 0 (0xc3)")
    assert engine.documents.get(uri).text == SOURCE
    assert_serves_others(client)


def test_oversize_document_is_resource_exhausted(client: EngineClient) -> None:
    uri = fresh_uri("big")
    text = "é" * 2_000_001  # one character over the 2,000,000 limit; 4 MB of UTF-8, past gRPC's default 4 MiB
    with pytest.raises(TooLarge, match="2000001 characters exceeds the limit of 2000000") as caught:
        client.open_document(uri, "python", 1, text)
    assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert_serves_others(client)


def test_oversize_edit_is_resource_exhausted(client: EngineClient, engine: CompletionEngine) -> None:
    uri = fresh_uri("big-edit")
    client.open_document(uri, "python", 1, SOURCE)
    with pytest.raises(TooLarge, match="exceeds the limit"):
        client.edit_document(uri, 2, [TextEdit(Range(Position(2, 0), Position(2, 0)), "x" * 2_000_000)])
    assert engine.documents.get(uri).text == SOURCE
    assert_serves_others(client)


def test_invalid_options_are_invalid_argument(client: EngineClient, stub: engine_pb2_grpc.CompletionEngineStub) -> None:
    uri = fresh_uri("options")
    client.open_document(uri, "python", 1, SOURCE)
    with pytest.raises(InvalidInput, match="max_tokens must be in 1..1024, got 0"):
        list(client.complete(CompletionRequest("o1", uri, Position(1, 11), options=CompletionOptions(max_tokens=0)), timeout=RPC_TIMEOUT))
    with pytest.raises(InvalidInput, match="top_p"):
        list(client.complete(CompletionRequest("o2", uri, Position(1, 11), options=CompletionOptions(top_p=0.0)), timeout=RPC_TIMEOUT))
    # An explicit 0 on the wire is 0, not "unset, use the default".
    request = pb.CompleteRequest(uri=uri, position=pb.Position(line=1, character=11), options=pb.CompletionOptions(max_tokens=0))
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.Complete(request, timeout=RPC_TIMEOUT))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # An unknown scope number (proto3 enums are open) is rejected too.
    request = pb.CompleteRequest(uri=uri, position=pb.Position(line=1, character=11), options=pb.CompletionOptions(scope=9))
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.Complete(request, timeout=RPC_TIMEOUT))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "unknown scope 9" in caught.value.details()
    assert_serves_others(client)


def test_double_open_is_already_exists(client: EngineClient) -> None:
    uri = fresh_uri("twice")
    client.open_document(uri, "python", 1, SOURCE)
    with pytest.raises(DocumentAlreadyOpen, match="is already open") as caught:
        client.open_document(uri, "python", 1, SOURCE)
    assert caught.value.code == grpc.StatusCode.ALREADY_EXISTS
    assert_serves_others(client)


def test_unexpected_exception_is_internal_and_server_keeps_serving(tiny_model: LoadedModel) -> None:
    class BrokenOpen(CompletionEngine):
        def open_document(self, uri: str, language_id: str, version: int, text: str):  # type: ignore[override]
            raise RuntimeError("disk on fire")

    running = start_server(BrokenOpen(tiny_model))
    try:
        with EngineClient(running.address) as client:
            with pytest.raises(EngineError, match="OpenDocument: internal error: RuntimeError: disk on fire") as caught:
                client.open_document(fresh_uri("broken"), "python", 1, SOURCE)
            assert caught.value.code == grpc.StatusCode.INTERNAL
            assert client.health()
            assert client.cancel("nothing-running") is False
    finally:
        running.stop(grace=0)


# -- cancellation ------------------------------------------------------------------
class SlowX(torch.nn.Module):
    """The tiny model made slow and single-minded: every forward pass sleeps ``delay`` s
    and predicts the token "x" (the inner model still runs, so KV caches stay real)."""

    def __init__(self, inner: Any, token_id: int, delay: float) -> None:
        super().__init__()
        self.inner = inner
        self.model = inner.model  # what cache.kv.rope_spec reads
        self.config = inner.config
        self.token_id = token_id
        self.delay = delay

    def forward(self, input_ids: torch.Tensor, **kwargs: Any) -> SimpleNamespace:
        time.sleep(self.delay)
        out = self.inner(input_ids=input_ids, **kwargs)
        logits = torch.zeros_like(out.logits)  # [B, T, V]
        logits[..., self.token_id] = 1.0
        return SimpleNamespace(logits=logits)


@pytest.fixture(scope="module")
def slow_server(tiny_model: LoadedModel) -> Iterator[RunningServer]:
    (x,) = tiny_model.tokenizer.encode("x")
    slow = LoadedModel(
        name="slow-x", model=SlowX(tiny_model.model, x, delay=0.02), tokenizer=tiny_model.tokenizer,
        family=tiny_model.family, device=torch.device("cpu"),
    )
    running = start_server(CompletionEngine(slow))
    yield running
    running.stop(grace=0)


LONG = CompletionOptions(max_tokens=1024, scope=Scope.LINE)  # ~20 s of "x" if nothing stops it


def test_cancel_by_request_id_stops_the_decode(slow_server: RunningServer) -> None:
    with EngineClient(slow_server.address) as client:
        uri = fresh_uri("cancel")
        client.open_document(uri, "python", 1, SOURCE)
        stream = client.complete(CompletionRequest("to-cancel", uri, Position(1, 11), options=LONG), timeout=RPC_TIMEOUT)
        first = next(stream)
        assert (first.text, first.done) == ("x", False)
        started = time.perf_counter()
        assert client.cancel("to-cancel") is True
        rest = list(stream)
        assert time.perf_counter() - started < 5
        last = rest[-1]
        assert last.done and last.finish_reason is FinishReason.CANCELLED
        assert last.generated_tokens < 200, last.generated_tokens
        assert client.cancel("to-cancel") is False  # no longer running
        # The model is free again: a short request completes.
        short = CompletionRequest("after", uri, Position(1, 11), options=CompletionOptions(max_tokens=2, scope=Scope.LINE))
        assert [chunk.text for chunk in client.complete(short, timeout=RPC_TIMEOUT)][-1] == "xx"


def test_cancel_from_another_thread_while_streaming(slow_server: RunningServer) -> None:
    with EngineClient(slow_server.address) as client:
        uri = fresh_uri("cancel-thread")
        client.open_document(uri, "python", 1, SOURCE)
        chunks: list = []
        started = threading.Event()

        def consume() -> None:
            for chunk in client.complete(CompletionRequest("threaded", uri, Position(1, 11), options=LONG), timeout=RPC_TIMEOUT):
                chunks.append(chunk)
                started.set()

        worker = threading.Thread(target=consume)
        worker.start()
        assert started.wait(RPC_TIMEOUT)
        assert client.cancel("threaded")
        worker.join(RPC_TIMEOUT)
        assert not worker.is_alive()
        assert chunks[-1].finish_reason is FinishReason.CANCELLED


def test_client_disconnect_stops_the_decode(slow_server: RunningServer) -> None:
    """Dropping the stream (the LSP abandoning a request) frees the model for the next one."""
    with EngineClient(slow_server.address) as client:
        uri = fresh_uri("disconnect")
        client.open_document(uri, "python", 1, SOURCE)
        stream = client.complete(CompletionRequest("dropped", uri, Position(1, 11), options=LONG), timeout=RPC_TIMEOUT)
        next(stream)
        stream.close()  # cancels the RPC; the server must cancel the decode
        started = time.perf_counter()
        short = CompletionRequest("next", uri, Position(1, 11), options=CompletionOptions(max_tokens=2, scope=Scope.LINE))
        assert list(client.complete(short, timeout=RPC_TIMEOUT))[-1].text == "xx"
        # Had "dropped" kept the model for its 1024 tokens, this would take ~20 s.
        assert time.perf_counter() - started < 5


def test_alternatives_and_speculation_cross_the_wire(client: EngineClient) -> None:
    uri = fresh_uri("alternatives")
    client.open_document(uri, "python", 1, SOURCE)
    options = CompletionOptions(max_tokens=6, scope=Scope.BLOCK, suggestions=3)
    chunks = list(client.complete(CompletionRequest("alt", uri, Position(1, 11), options=options), timeout=RPC_TIMEOUT))
    assert len(chunks) == 1 and chunks[0].done and len(chunks[0].alternatives) >= 1
    assert chunks[0].text not in chunks[0].alternatives
    options = CompletionOptions(max_tokens=6, scope=Scope.BLOCK, speculation="lookup")
    final = list(client.complete(CompletionRequest("spec", uri, Position(1, 11), options=options), timeout=RPC_TIMEOUT))[-1]
    assert final.speculation == "lookup" and final.timings.target_passes >= 1
    client.close_document(uri)
