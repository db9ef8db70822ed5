"""End to end against ``livefim lsp`` as a subprocess, with the engine in this test process (tiny model).

Each test drives a real pytest-lsp client and checks what only the whole path
shows: superseded requests are cancelled in the engine, typed-ahead answers
without the engine, an engine restart re-sends the documents (edits made while
it was down included), and telemetry lands in the store with the right arm.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import pytest_lsp
from lsprotocol import types as lsp
from pytest_lsp import ClientServerConfig, LanguageClient

from engine.engine import CompletionEngine
from engine.runtime import LoadedModel
from engine.service import RunningServer, start_server
from telemetry.events import Event
from telemetry.experiments import load_experiments
from tests.test_lsp_e2e import SERVER_COMMAND, _server_env, change, errors_logged, inline_completion, insert, open_document, request

INLINE = lsp.ClientCapabilities(
    text_document=lsp.TextDocumentClientCapabilities(inline_completion=lsp.InlineCompletionClientCapabilities())
)
AUTOMATIC, INVOKED = lsp.InlineCompletionTriggerKind.Automatic, lsp.InlineCompletionTriggerKind.Invoked


@pytest_lsp.fixture(config=ClientServerConfig(server_command=SERVER_COMMAND, server_env=_server_env()))
async def client(lsp_client: LanguageClient) -> AsyncIterator[None]:
    yield
    await lsp_client.shutdown_session()


@pytest.fixture()
def engine(tiny_model: LoadedModel) -> Iterator[tuple[CompletionEngine, RunningServer]]:
    engine = CompletionEngine(tiny_model)
    running = start_server(engine, "127.0.0.1:0")
    yield engine, running
    running.stop(grace=0.2)


async def stats(client: LanguageClient) -> dict:
    answer = await request(client.protocol.send_request_async("livefim/stats", {}))
    return answer._asdict() if hasattr(answer, "_asdict") else dict(answer)  # pygls hands custom results over as named tuples


async def start(client: LanguageClient, address: str, **options) -> None:  # noqa: ANN003
    await request(client.initialize_session(lsp.InitializeParams(
        capabilities=INLINE, initialization_options={"engine": address, "telemetry": {"enabled": False}, **options})))


# -- cancellation ---------------------------------------------------------------


async def test_an_edit_supersedes_the_request_in_flight_and_the_engine_stops_decoding(
    client: LanguageClient, engine: tuple[CompletionEngine, RunningServer], monkeypatch
) -> None:
    completion_engine, running = engine
    model = completion_engine.model.model
    original_forward = model.forward

    def slow_forward(*args, **kwargs):  # noqa: ANN002, ANN003
        time.sleep(0.05)  # ~50 ms a step: a 64-token decode takes seconds, time for an edit to land
        return original_forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", slow_forward)
    cancelled: list[tuple[str, bool]] = []
    real_cancel = completion_engine.cancel

    def spy_cancel(request_id: str) -> bool:
        result = real_cancel(request_id)
        cancelled.append((request_id, result))
        return result

    monkeypatch.setattr(completion_engine, "cancel", spy_cancel)
    await start(client, running.address, debounceMs=0)
    uri = "file:///tmp/livefim-e2e/supersede.py"
    open_document(client, uri, "def f(x):\n    return \n")
    pending = asyncio.ensure_future(inline_completion(client, uri, lsp.Position(line=1, character=11), AUTOMATIC))
    for _ in range(200):  # until the decode runs in the engine
        if completion_engine._cancel_events:
            break
        await asyncio.sleep(0.01)
    assert completion_engine._cancel_events, "the request never reached the engine"
    change(client, uri, 2, insert(lsp.Position(line=1, character=11), "x"))
    superseded = await pending
    assert list(superseded.items) == []  # its text described a document that no longer exists
    for _ in range(100):
        if cancelled:
            break
        await asyncio.sleep(0.02)
    assert cancelled and cancelled[0][1] is True, cancelled  # the engine had it in flight and stopped it
    assert (await stats(client))["cancelled"] >= 1
    assert errors_logged(client) == []


async def test_a_newer_request_supersedes_an_older_one(client: LanguageClient, engine: tuple[CompletionEngine, RunningServer]) -> None:
    _, running = engine
    await start(client, running.address, debounceMs=300)  # the older one is still waiting out its debounce
    uri = "file:///tmp/livefim-e2e/newer.py"
    open_document(client, uri, "def f(x):\n    return \n")
    at = lsp.Position(line=1, character=11)
    older = asyncio.ensure_future(inline_completion(client, uri, at, AUTOMATIC))
    await asyncio.sleep(0.05)
    newer = await inline_completion(client, uri, at, AUTOMATIC)
    assert list((await older).items) == []
    assert len(newer.items) == 1
    counters = await stats(client)
    assert counters["cancelled"] == 1 and counters["engine_requests"] == 1


# -- typed-ahead ------------------------------------------------------------------


async def test_typing_the_start_of_a_suggestion_is_answered_without_the_engine(
    client: LanguageClient, engine: tuple[CompletionEngine, RunningServer]
) -> None:
    _, running = engine
    await start(client, running.address, debounceMs=0)
    uri = "file:///tmp/livefim-e2e/typed.py"
    text = "def f(x):\n    return \n"
    open_document(client, uri, text)
    at = lsp.Position(line=1, character=11)
    first = await inline_completion(client, uri, at, AUTOMATIC)
    assert len(first.items) == 1
    suggestion = first.items[0].insert_text
    typed = suggestion.split("\n")[0][:2]
    if len(typed) < 1 or len(typed) >= len(suggestion):
        pytest.skip(f"the tiny model's suggestion {suggestion!r} has no first characters to type")
    change(client, uri, 2, insert(at, typed))
    after = lsp.Position(line=1, character=11 + len(typed))
    second = await inline_completion(client, uri, after, AUTOMATIC)
    assert [item.insert_text for item in second.items] == [suggestion[len(typed):]]
    assert second.items[0].command.arguments == first.items[0].command.arguments  # the same suggestion
    counters = await stats(client)
    assert counters["typed_ahead_hits"] == 1 and counters["engine_requests"] == 1
    # typing something else: the cache steps aside and the engine answers
    change(client, uri, 3, insert(after, "\u00a7"))
    third = await inline_completion(client, uri, lsp.Position(line=1, character=after.character + 1), AUTOMATIC)
    assert (await stats(client))["engine_requests"] == 2
    assert all(item.insert_text != suggestion[len(typed) + 1:] or third is None for item in third.items)


# -- engine restart ----------------------------------------------------------------


async def test_engine_restart_resends_documents_and_edits_made_meanwhile(client: LanguageClient, tiny_model: LoadedModel) -> None:
    first = CompletionEngine(tiny_model)
    running = start_server(first, "127.0.0.1:0")
    port = running.port
    await start(client, running.address, debounceMs=0)
    uri = "file:///tmp/livefim-e2e/restart.py"
    open_document(client, uri, "a = 1\n")
    assert len((await inline_completion(client, uri, lsp.Position(line=1, character=0), AUTOMATIC)).items) <= 1
    running.stop(grace=0)  # the engine dies
    await asyncio.sleep(0.2)
    for _ in range(3):  # keystrokes while it is down: empty answers, no error storm
        assert list((await inline_completion(client, uri, lsp.Position(line=1, character=0), AUTOMATIC)).items) == []
    change(client, uri, 2, insert(lsp.Position(line=1, character=0), "b = 2\n"))  # an edit the dead engine never saw
    second = CompletionEngine(tiny_model)
    restarted = start_server(second, f"127.0.0.1:{port}")
    try:
        for _ in range(300):
            if (await stats(client))["resyncs"] >= 1:
                break
            await asyncio.sleep(0.05)
        assert (await stats(client))["resyncs"] >= 1, "the server never re-sent the documents"
        assert second.documents.get(uri).text == "a = 1\nb = 2\n"  # mirror, edit included
        assert second.documents.get(uri).version == 2
        again = await inline_completion(client, uri, lsp.Position(line=2, character=0), AUTOMATIC)
        assert len(again.items) == 1
        messages = [m.message for m in client.log_messages]
        assert sum("engine unreachable" in m for m in messages) == 1, messages
        assert any("re-sent 1 document" in m for m in messages), messages
        assert errors_logged(client) == []
    finally:
        restarted.stop(grace=0)


# -- telemetry ------------------------------------------------------------------------


def _events(path: Path) -> list[Event]:
    if not path.exists():
        return []
    with sqlite3.connect(path) as db:
        return [Event.from_json(body) for (body,) in db.execute("SELECT body FROM events ORDER BY id")]


async def test_telemetry_records_show_accept_reject_and_persistence_with_the_users_arm(
    client: LanguageClient, engine: tuple[CompletionEngine, RunningServer], tmp_path: Path
) -> None:
    _, running = engine
    experiments = tmp_path / "experiments.toml"
    experiments.write_text(
        '[[experiment]]\nname = "speculation"\n'
        '[[experiment.arm]]\nname = "lookup"\noptions = { speculation = "lookup" }\n'
        '[[experiment.arm]]\nname = "plain"\noptions = { speculation = "off" }\n'
    )
    user = "user-42"
    expected_arm = load_experiments(experiments)[0].assign(user)
    database = tmp_path / "telemetry.db"
    await request(client.initialize_session(lsp.InitializeParams(capabilities=INLINE, initialization_options={
        "engine": running.address, "debounceMs": 0, "userId": user, "experimentsFile": str(experiments),
        "telemetry": {"enabled": True, "store": str(database), "persistenceDelaySeconds": 0.5}})))
    uri = "file:///tmp/livefim-e2e/telemetry.py"
    text = "def f(x):\n    return \n"
    open_document(client, uri, text)
    at = lsp.Position(line=1, character=11)
    shown = await inline_completion(client, uri, at, AUTOMATIC)
    accepted_id = shown.items[0].command.arguments[0]
    accepted_text = shown.items[0].insert_text
    client.protocol.notify("livefim/didShow", {"id": accepted_id})
    # the editor inserts the suggestion, then runs the item's command
    change(client, uri, 2, insert(at, accepted_text))
    await request(client.workspace_execute_command_async(lsp.ExecuteCommandParams(command="livefim.accept", arguments=[accepted_id])))
    # a second suggestion, dismissed
    end = text[:21] + accepted_text
    line = end.split("\n")[-1]
    second = await inline_completion(client, uri, lsp.Position(line=end.count("\n"), character=len(line)), INVOKED)
    rejected_id = second.items[0].command.arguments[0]
    client.protocol.notify("livefim/didShow", {"id": rejected_id})
    client.protocol.notify("livefim/didReject", {"id": rejected_id})
    for _ in range(100):  # the persistence check after 0.5 s, and the recorder's flushes
        recorded = {(e.kind, e.suggestion_id) for e in _events(database)}
        if {("persisted", accepted_id), ("rejected", rejected_id)} <= recorded:
            break
        await asyncio.sleep(0.1)
    events = _events(database)
    by_kind = {(e.kind, e.suggestion_id): e for e in events}
    assert ("shown", accepted_id) in by_kind and ("accepted", accepted_id) in by_kind
    assert ("rejected", accepted_id) not in by_kind  # an accept is never logged as a reject
    assert ("shown", rejected_id) in by_kind and ("rejected", rejected_id) in by_kind
    assert ("accepted", rejected_id) not in by_kind  # ... nor a reject as an accept
    assert by_kind[("accepted", accepted_id)].accepted_chars == len(accepted_text)
    persisted = by_kind[("persisted", accepted_id)]
    assert persisted.kept is True and persisted.similarity == 1.0
    for event in events:
        assert (event.experiment, event.arm, event.user) == ("speculation", expected_arm.name, user)
        assert event.text is None  # no code unless the user shares it
        assert event.cache_mode == "pie" and event.model == "tiny-random-qwen2"
    assert by_kind[("shown", accepted_id)].speculation == expected_arm.options["speculation"]
    assert by_kind[("shown", rejected_id)].suggestions == 3  # invoked: alternatives


async def test_telemetry_off_records_nothing(client: LanguageClient, engine: tuple[CompletionEngine, RunningServer], tmp_path: Path) -> None:
    _, running = engine
    database = tmp_path / "telemetry.db"
    await request(client.initialize_session(lsp.InitializeParams(capabilities=INLINE, initialization_options={
        "engine": running.address, "debounceMs": 0, "telemetry": {"enabled": False, "store": str(database)}})))
    uri = "file:///tmp/livefim-e2e/private.py"
    open_document(client, uri, "x = \n")
    items = (await inline_completion(client, uri, lsp.Position(line=0, character=4), AUTOMATIC)).items
    client.protocol.notify("livefim/didShow", {"id": items[0].command.arguments[0]})
    client.protocol.notify("livefim/didAccept", {"id": items[0].command.arguments[0]})
    await asyncio.sleep(0.8)
    assert (await stats(client))["telemetry_written"] == 0
    assert _events(database) == []


# -- settings and the workspace ------------------------------------------------------------


async def settings_once(client: LanguageClient, arrived: Callable[[dict], bool], tries: int = 100) -> dict:
    """The server's settings (from ``livefim/stats``) once ``arrived`` holds for them, or the last ones seen."""
    for _ in range(tries):
        settings = (await stats(client))["settings"]
        settings = settings._asdict() if hasattr(settings, "_asdict") else settings
        if arrived(settings):
            break
        await asyncio.sleep(0.05)
    return settings


@pytest_lsp.fixture(config=ClientServerConfig(server_command=SERVER_COMMAND, server_env=_server_env(LIVEFIM_TINY_MODEL="1")))
async def configured_client(lsp_client: LanguageClient) -> AsyncIterator[None]:
    lsp_client.set_configuration({"maxLines": 2, "debounceMs": 40, "telemetry": {"enabled": False}}, section="livefim")
    yield
    await lsp_client.shutdown_session()


async def test_settings_come_from_workspace_configuration_and_follow_changes(configured_client: LanguageClient) -> None:
    capabilities = lsp.ClientCapabilities(
        workspace=lsp.WorkspaceClientCapabilities(configuration=True),
        text_document=lsp.TextDocumentClientCapabilities(inline_completion=lsp.InlineCompletionClientCapabilities()))
    await request(configured_client.initialize_session(lsp.InitializeParams(capabilities=capabilities)))
    settings = await settings_once(configured_client, lambda s: s["max_lines"] == 2)
    assert (settings["max_lines"], settings["debounce_ms"], settings["telemetry_enabled"]) == (2, 40, False)
    configured_client.set_configuration({"maxLines": 7, "debounceMs": None, "telemetry": {"enabled": False}}, section="livefim")
    configured_client.workspace_did_change_configuration(lsp.DidChangeConfigurationParams(settings=None))
    settings = await settings_once(configured_client, lambda s: s["max_lines"] == 7)
    assert (settings["max_lines"], settings["debounce_ms"]) == (7, None)
    configured_client.workspace_did_change_configuration(lsp.DidChangeConfigurationParams(settings={"livefim": {"maxLines": 0}}))
    for _ in range(100):
        if any("maxLines must be" in m.message for m in configured_client.log_messages):
            break
        await asyncio.sleep(0.05)
    assert any("maxLines must be an integer from 1 to 200, got 0" in m.message for m in configured_client.log_messages)


@pytest_lsp.fixture(config=ClientServerConfig(server_command=SERVER_COMMAND, server_env=_server_env(LIVEFIM_TINY_MODEL="1")))
async def embedded_client(lsp_client: LanguageClient) -> AsyncIterator[None]:
    yield
    await lsp_client.shutdown_session()


async def test_the_workspace_folder_is_indexed_for_the_embedded_engine(embedded_client: LanguageClient, tmp_path: Path) -> None:
    repo = tmp_path / "geo"
    repo.mkdir()
    (repo / "shapes.py").write_text("class Circle:\n    def __init__(self, r):\n        self.r = r\n")
    (repo / "app.py").write_text("from shapes import Circle\n\nc = Circle(2)\n")
    await request(embedded_client.initialize_session(lsp.InitializeParams(
        capabilities=lsp.ClientCapabilities(window=lsp.WindowClientCapabilities(work_done_progress=True)),
        workspace_folders=[lsp.WorkspaceFolder(uri=repo.as_uri(), name="geo")],
        initialization_options={"telemetry": {"enabled": False}})))
    for _ in range(600):
        if (await stats(embedded_client))["repository_indexed"]:
            break
        await asyncio.sleep(0.1)
    counters = await stats(embedded_client)
    assert counters["repository"] == str(repo) and counters["repository_indexed"] is True
    assert any(f"indexed {repo} (2 files" in m.message for m in embedded_client.log_messages), embedded_client.log_messages
    uri = (repo / "app.py").as_uri()
    open_document(embedded_client, uri, "from shapes import Circle\n\nc = Circle(2)\nd = \n")
    assert len((await inline_completion(embedded_client, uri, lsp.Position(line=3, character=4), AUTOMATIC)).items) <= 1
    assert errors_logged(embedded_client) == []
