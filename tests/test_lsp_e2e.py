"""End to end: a pytest-lsp client drives ``python -m lsp.server`` as a real subprocess.

- embedded tiny engine (``LIVEFIM_TINY_MODEL=1``): the whole path, fast; the
  tiny model's text is random, so we check structure and that no engine error
  was logged (a lost edit would make the cursor line not exist in the engine);
- a remote engine in this test process (tiny model), reached through
  ``initializationOptions.engine``: we read the engine's copy of the document
  and compare it with the text the edits must produce, in each position encoding;
- the real 0.5B model (``real_model``): edits that leave ``return `` in
  ``def add(a, b)`` get ``a + b``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_lsp
from lsprotocol import types as lsp
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

from engine.engine import CompletionEngine
from engine.runtime import LoadedModel
from engine.service import RunningServer, start_server

SERVER_COMMAND = [sys.executable, "-m", "livefim.cli", "lsp"]
REQUEST_TIMEOUT_S = 120.0


def _server_env(**overrides: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in ("LIVEFIM_TINY_MODEL", "LIVEFIM_MODEL")}
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    env.update(overrides)
    return env


# -- helpers: a client-side view of the edits, in the negotiated encoding ------


def column(line: str, code_points: int, encoding: str) -> int:
    """Client column of a code-point column, computed independently of lsp/positions.py."""
    head = line[:code_points]
    if encoding == "utf-8":
        return len(head.encode("utf-8"))
    if encoding == "utf-16":
        return len(head.encode("utf-16-le")) // 2
    return len(head)


def end_of_line(text: str, line: int, encoding: str) -> lsp.Position:
    content = text.split("\n")[line]
    return lsp.Position(line=line, character=column(content, len(content), encoding))


def insert(at: lsp.Position, text: str) -> lsp.TextDocumentContentChangePartial:
    return lsp.TextDocumentContentChangePartial(range=lsp.Range(start=at, end=at), text=text)


def change(client: LanguageClient, uri: str, version: int, *changes: lsp.TextDocumentContentChangePartial) -> None:
    client.text_document_did_change(
        lsp.DidChangeTextDocumentParams(
            text_document=lsp.VersionedTextDocumentIdentifier(uri=uri, version=version),
            content_changes=list(changes),
        )
    )


def open_document(client: LanguageClient, uri: str, text: str, version: int = 1) -> None:
    client.text_document_did_open(
        lsp.DidOpenTextDocumentParams(
            text_document=lsp.TextDocumentItem(uri=uri, language_id="python", version=version, text=text)
        )
    )


def edit_into_wave(client: LanguageClient, uri: str, encoding: str) -> tuple[str, lsp.Position]:
    """Open a file and edit it in four incremental batches; returns the expected text and its cursor.

    The cursor line holds an emoji before the cursor (2 UTF-16 units, 4 UTF-8 bytes,
    1 code point), so a column passed on unconverted would be wrong.
    """
    text = "def greet(name):\n    return name\n"
    open_document(client, uri, text)
    # v2: append to line 1 -> "    return name + '😀'"
    change(client, uri, 2, insert(end_of_line(text, 1, encoding), " + '😀'"))
    text = "def greet(name):\n    return name + '😀'\n"
    # v3: two changes in one batch; the second's position refers to the text after the first.
    after_first = text + "\ndef wave():\n"
    change(
        client,
        uri,
        3,
        insert(lsp.Position(line=2, character=0), "\ndef wave():\n"),
        insert(lsp.Position(line=4, character=0), "    s = '😀'; return \n"),
    )
    text = after_first + "    s = '😀'; return \n"
    # v4: type after the emoji; a column far past the end of the line means its end.
    change(client, uri, 4, insert(lsp.Position(line=4, character=999), "len("))
    # v5: a last line without a newline, then a column past its end. (pygls's own codec
    # rewrites such a column to length - 1 in the params; the server must not be fooled.)
    change(client, uri, 5, insert(lsp.Position(line=5, character=0), "pass"), insert(lsp.Position(line=5, character=99), "  # end"))
    text = "def greet(name):\n    return name + '😀'\n\ndef wave():\n    s = '😀'; return len(\npass  # end"
    return text, end_of_line(text, 4, encoding)


async def request(awaitable):  # type: ignore[no-untyped-def]
    return await asyncio.wait_for(awaitable, REQUEST_TIMEOUT_S)


async def inline_completion(
    client: LanguageClient, uri: str, position: lsp.Position, trigger: lsp.InlineCompletionTriggerKind
) -> lsp.InlineCompletionList:
    """textDocument/inlineCompletion as an editor sends it (Invoked: the user asked; Automatic: typing)."""
    return await request(
        client.text_document_inline_completion_async(
            lsp.InlineCompletionParams(
                text_document=lsp.TextDocumentIdentifier(uri=uri),
                position=position,
                context=lsp.InlineCompletionContext(trigger_kind=trigger),
            )
        )
    )



def errors_logged(client: LanguageClient) -> list[str]:
    return [m.message for m in client.log_messages if m.type == lsp.MessageType.Error]


# -- (a) embedded tiny engine --------------------------------------------------


@pytest_lsp.fixture(config=ClientServerConfig(server_command=SERVER_COMMAND, server_env=_server_env(LIVEFIM_TINY_MODEL="1")))
async def tiny_client(lsp_client: LanguageClient) -> AsyncIterator[None]:
    yield
    await lsp_client.shutdown_session()


async def test_embedded_tiny_engine_syncs_edits_and_completes(tiny_client: LanguageClient) -> None:
    # Neovim 0.7 offers no positionEncodings and has no inline completion: UTF-16, and completion items.
    result = await request(
        tiny_client.initialize_session(lsp.InitializeParams(capabilities=client_capabilities("neovim@v0.7.0")))
    )
    capabilities = result.capabilities
    assert capabilities.position_encoding == lsp.PositionEncodingKind.Utf16
    assert capabilities.inline_completion_provider is not None
    assert capabilities.completion_provider is not None
    assert capabilities.text_document_sync.change == lsp.TextDocumentSyncKind.Incremental

    uri = "file:///tmp/livefim-e2e/wave.py"
    _, cursor = edit_into_wave(tiny_client, uri, "utf-16")
    assert cursor == lsp.Position(line=4, character=25)  # 24 code points, the emoji counting 2 units

    inline = await inline_completion(tiny_client, uri, cursor, lsp.InlineCompletionTriggerKind.Invoked)
    # The tiny model's text is noise, but deterministic (seed 0) and not empty here.
    # An explicit invoke asks for alternatives: distinct items, all at the cursor.
    assert isinstance(inline, lsp.InlineCompletionList)
    assert 2 <= len(inline.items) <= 3
    assert len({item.insert_text for item in inline.items}) == len(inline.items)
    assert all(item.range == lsp.Range(start=cursor, end=cursor) for item in inline.items)
    typing = await inline_completion(tiny_client, uri, cursor, lsp.InlineCompletionTriggerKind.Automatic)
    assert len(typing.items) == 1  # while typing: one suggestion, streamed and cheap
    suggestion = typing.items[0]
    assert isinstance(suggestion.insert_text, str) and suggestion.insert_text
    assert suggestion.range == lsp.Range(start=cursor, end=cursor)

    menu = await request(
        tiny_client.text_document_completion_async(
            lsp.CompletionParams(text_document=lsp.TextDocumentIdentifier(uri=uri), position=cursor)
        )
    )
    assert isinstance(menu, lsp.CompletionList) and menu.is_incomplete
    assert len(menu.items) == 1
    item = menu.items[0]
    # No identifier before the cursor ("len(" ends in "("), so the edit is an insertion of the same text.
    assert item.text_edit == lsp.TextEdit(range=lsp.Range(start=cursor, end=cursor), new_text=suggestion.insert_text)
    assert item.label and item.filter_text == suggestion.insert_text

    # Line 4 exists only after the edits: had the engine missed one, completing there would have failed.
    assert errors_logged(tiny_client) == []

    # A document the client never opened: an empty answer and a log line, and the server lives on.
    missing = await inline_completion(tiny_client, "file:///tmp/livefim-e2e/never-opened.py", lsp.Position(line=0, character=0),
                                      lsp.InlineCompletionTriggerKind.Invoked)
    assert len(missing.items) == 0
    assert any("never-opened.py" in m.message for m in tiny_client.log_messages)

    tiny_client.text_document_did_close(lsp.DidCloseTextDocumentParams(text_document=lsp.TextDocumentIdentifier(uri=uri)))


# -- (b) remote engine in this process, each position encoding ----------------


@pytest.fixture(scope="module")
def remote_engine(tiny_model: LoadedModel) -> Iterator[tuple[CompletionEngine, RunningServer]]:
    engine = CompletionEngine(tiny_model)
    running = start_server(engine, "127.0.0.1:0")
    yield engine, running
    running.stop(grace=0.5)


@pytest_lsp.fixture(config=ClientServerConfig(server_command=SERVER_COMMAND, server_env=_server_env()))
async def plain_client(lsp_client: LanguageClient) -> AsyncIterator[None]:
    yield
    await lsp_client.shutdown_session()


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16", "utf-32"])
async def test_remote_engine_gets_exact_text_in_each_position_encoding(
    plain_client: LanguageClient, remote_engine: tuple[CompletionEngine, RunningServer], encoding: str
) -> None:
    engine, running = remote_engine
    # The client prefers `encoding` but also offers UTF-16; the server must pick and use `encoding`.
    offered = [encoding] + (["utf-16"] if encoding != "utf-16" else [])
    capabilities = lsp.ClientCapabilities(
        general=lsp.GeneralClientCapabilities(position_encodings=offered),
        text_document=lsp.TextDocumentClientCapabilities(inline_completion=lsp.InlineCompletionClientCapabilities()),
    )
    result = await request(
        plain_client.initialize_session(
            lsp.InitializeParams(capabilities=capabilities, initialization_options={"engine": running.address})
        )
    )
    assert result.capabilities.position_encoding == encoding
    assert result.capabilities.completion_provider is None  # the client has inline completion

    uri = f"file:///tmp/livefim-e2e/remote-{encoding}.py"
    expected, cursor = edit_into_wave(plain_client, uri, encoding)
    inline = await inline_completion(plain_client, uri, cursor, lsp.InlineCompletionTriggerKind.Automatic)
    # The completion waited for every edit sent before it: the engine's copy is exact.
    document = engine.documents.get(uri)
    assert document.text == expected
    assert document.version == 5
    for item in inline.items:
        assert item.range == lsp.Range(start=cursor, end=cursor)  # echoed in the client's encoding
    assert errors_logged(plain_client) == []

    plain_client.text_document_did_close(lsp.DidCloseTextDocumentParams(text_document=lsp.TextDocumentIdentifier(uri=uri)))


async def test_unreachable_engine_is_reported_once_not_per_request(plain_client: LanguageClient) -> None:
    await request(
        plain_client.initialize_session(
            lsp.InitializeParams(
                capabilities=client_capabilities("neovim@v0.7.0"), initialization_options={"engine": "127.0.0.1:1"}
            )
        )
    )
    uri = "file:///tmp/livefim-e2e/offline.py"
    open_document(plain_client, uri, "x = 1\n")
    for _ in range(3):  # three keystrokes' worth of requests: empty answers, one message, the server lives on
        menu = await request(
            plain_client.text_document_completion_async(
                lsp.CompletionParams(text_document=lsp.TextDocumentIdentifier(uri=uri), position=lsp.Position(line=1, character=0))
            )
        )
        assert len(menu.items) == 0
    unreachable = [m for m in plain_client.log_messages if "engine unreachable" in m.message]
    assert len(unreachable) == 1, [m.message for m in plain_client.log_messages]
    assert errors_logged(plain_client) == []


# -- (c) the real model ---------------------------------------------------------


@pytest_lsp.fixture(config=ClientServerConfig(server_command=SERVER_COMMAND, server_env=_server_env()))
async def real_client(lsp_client: LanguageClient) -> AsyncIterator[None]:
    yield
    await lsp_client.shutdown_session()


@pytest.mark.real_model
async def test_real_model_completes_the_return_of_add(real_client: LanguageClient) -> None:
    await request(real_client.initialize_session(lsp.InitializeParams(capabilities=lsp.ClientCapabilities())))
    uri = "file:///tmp/livefim-e2e/add.py"
    open_document(real_client, uri, "")
    # Typed as an editor sends it: a line, a newline with indent, then the start of the return.
    change(real_client, uri, 2, insert(lsp.Position(line=0, character=0), "def add(a, b):"))
    change(real_client, uri, 3, insert(lsp.Position(line=0, character=14), "\n    "))
    change(real_client, uri, 4, insert(lsp.Position(line=1, character=4), "return "), insert(lsp.Position(line=1, character=11), "\n"))
    inline = await inline_completion(real_client, uri, lsp.Position(line=1, character=11), lsp.InlineCompletionTriggerKind.Invoked)
    assert 1 <= len(inline.items) <= 3, real_client.log_messages  # invoked: alternatives, best first
    assert "a + b" in inline.items[0].insert_text
    assert errors_logged(real_client) == []
