"""The real Qwen2.5-Coder 0.5B behind a real gRPC server completes an obvious body."""

from __future__ import annotations

from typing import Iterator

import pytest

from engine.client import EngineClient
from engine.engine import CompletionEngine
from engine.runtime import LoadedModel
from engine.service import RunningServer, start_server
from engine.types import CompletionOptions, CompletionRequest, Position

pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module")
def server(real_model: LoadedModel) -> Iterator[RunningServer]:
    running = start_server(CompletionEngine(real_model))
    yield running
    running.stop(grace=0)


def test_completes_add_over_grpc(server: RunningServer) -> None:
    with EngineClient(server.address) as client:
        client.wait_ready(timeout=10)
        client.open_document("file:///math_utils.py", "python", 1, "def add(a, b):\n    return \n")
        # Cursor after "    return " (line 1, character 11): the body of add is a + b.
        request = CompletionRequest("add", "file:///math_utils.py", Position(1, 11), version=1, options=CompletionOptions(max_tokens=16))
        chunks = list(client.complete(request, timeout=120))
    assert chunks[-1].done
    assert "a + b" in chunks[-1].text, chunks[-1]
    assert chunks[-1].model == "qwen2.5-coder-0.5b"
