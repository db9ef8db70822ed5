"""``livefim lsp``: a stdio language server that streams edits to the engine and serves inline suggestions.

Why thin handlers: each ``@feature`` below only converts LSP to engine terms;
the state lives in ``LivefimLanguageServer`` and one file per concern:
mirrors and position conversion (``documents.py``, ``positions.py``), the
engine connection and its reconnects (``engine_link.py``), the debounce
(``debounce.py``), typed-ahead (``typed_ahead.py``), suggestion telemetry
(``suggestions.py``, stored by ``telemetry/``), settings (``settings.py``).
Everything slow runs off the event loop.

Ordering: document updates go to the engine through one single-thread executor,
in the order the client sent them; a completion first waits for the updates sent
before it, then asks for the version it saw. So the engine patches its caches
between keystrokes, not when a completion is asked for.

Cancellation: an edit or a newer request for a document supersedes the request
in flight there (its decode is cancelled in the engine and it answers empty);
``$/cancelRequest`` from the client does the same.

Telemetry protocol (documented in ``editor-plugins/README.md``): notifications
``livefim/didShow``, ``livefim/didAccept``, ``livefim/didReject`` with the
suggestion ``id`` that each item's ``command`` (``livefim.accept``) carries.

Run::

    python -m lsp.server [--engine HOST:PORT] [--model NAME] [--experiments FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import logging
import os
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable
from urllib.parse import unquote, urlparse

from lsprotocol import types as lsp
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol
from pygls.protocol.language_server import lsp_method

from engine.client import EngineClient
from engine.errors import Cancelled, DocumentAlreadyOpen, DocumentNotFound, ModelUnavailable, StaleVersion
from engine.types import CompletionChunk, CompletionOptions, CompletionRequest
from lsp.debounce import TypingCadence
from lsp.documents import MirroredDocument
from lsp.engine_link import EngineConnection, EngineLink
from lsp.positions import Encoding, column_from_code_points
from lsp.settings import SECTION, Settings
from lsp.suggestions import SuggestionLedger
from lsp.typed_ahead import TypedAheadCache
from telemetry.experiments import Arm, ExperimentError, load_experiments
from telemetry.paths import default_experiments_file, local_user_id
from telemetry.store import Recorder, open_store

logger = logging.getLogger("livefim.lsp")

_PYTHON_LEVELS = {lsp.MessageType.Error: logging.ERROR, lsp.MessageType.Warning: logging.WARNING}

# Errors that mean "this completion is obsolete", not "something is wrong".
_QUIET_ERRORS = (StaleVersion, Cancelled)

ALTERNATIVES_ON_INVOKE = 3  # suggestions asked for when the user invokes (or cycles) explicitly
ACCEPT_COMMAND = "livefim.accept"
REPEATED_ERROR_INTERVAL_S = 60.0  # the same error is shown at most this often
PERSISTENCE_POLL_S = 1.0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("livefim")
    except PackageNotFoundError:
        return "0.0.0"


@dataclass(frozen=True)
class Suggestion:
    """An engine completion placed in the client's coordinates."""

    text: str  # inserted at the cursor
    cursor: lsp.Position  # client units, clamped into the line
    word: str  # identifier characters just before the cursor
    word_start: lsp.Position  # client units
    alternatives: tuple[str, ...] = ()  # other suggestions, best first (asked for on an explicit invoke)
    ids: tuple[str, ...] = ()  # suggestion ids: text first, then the alternatives


@dataclass
class _InFlight:
    request_id: str
    superseded: bool = False


@dataclass
class ServerStats:
    """Counters a benchmark or test reads with the ``livefim/stats`` request."""

    requests: int = 0  # completion requests received
    engine_requests: int = 0  # ... that reached the engine
    cancelled: int = 0  # superseded by an edit or a newer request (or $/cancelRequest)
    typed_ahead_hits: int = 0
    answered: int = 0  # non-empty suggestions returned
    skipped_engine_down: int = 0
    errors: int = 0
    resyncs: int = 0  # times every document was re-sent after the engine came back
    latencies_ms: list[float] = field(default_factory=list)  # request received -> suggestion returned (non-empty)


class _Protocol(LanguageServerProtocol):
    """pygls's protocol, except that our didChange handler sees each change untouched.

    pygls applies a change batch to its workspace before calling our handler, and
    its position codec *rewrites* a past-the-end column in the params in place
    (to length - 1 on a last line, dropping a character). We run first, and the
    workspace gets a copy.
    """

    @lsp_method(lsp.TEXT_DOCUMENT_DID_CHANGE)
    def lsp_text_document__did_change(self, params: lsp.DidChangeTextDocumentParams):  # type: ignore[override]
        if (user_handler := self.fm.features.get(lsp.TEXT_DOCUMENT_DID_CHANGE)) is not None:
            yield user_handler, (params,), None
        for change in copy.deepcopy(params.content_changes):
            self.workspace.update_text_document(params.text_document, change)


class LivefimLanguageServer(LanguageServer):
    """State of one LSP session: settings, the engine link, document mirrors, suggestions in flight."""

    def __init__(self, engine_address: str | None = None, model: str | None = None, experiments_file: str | None = None) -> None:
        super().__init__(
            "livefim", _version(), text_document_sync_kind=lsp.TextDocumentSyncKind.Incremental, protocol_cls=_Protocol
        )
        self.engine_address = engine_address  # --engine on the command line: wins over the editor's setting
        self.model = model
        self.settings = Settings(engine=engine_address, model=model, experiments_file=experiments_file)
        self.link: EngineLink | None = None
        self.documents: dict[str, MirroredDocument] = {}
        self.cadence: dict[str, TypingCadence] = {}
        self.typed_ahead = TypedAheadCache()
        self.recorder = Recorder(None)
        self.ledger = SuggestionLedger(self.recorder)
        self.arm: Arm | None = None
        self.experiment_name: str | None = None
        self.stats = ServerStats()
        self.workspace_root: Path | None = None
        self._in_flight: dict[str, _InFlight] = {}
        self._sync_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="livefim-sync")
        self._last_sync: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_error_at: dict[str, float] = {}
        self._background: list[asyncio.Task[None]] = []

    @property
    def connection(self) -> EngineConnection | None:
        return self.link.connection if self.link is not None else None

    @property
    def encoding(self) -> Encoding:
        """The negotiated position encoding: pygls picks the client's first supported one, else UTF-16,
        and advertises it; we read it back from pygls so both always agree."""
        return self.workspace.position_encoding or lsp.PositionEncodingKind.Utf16

    # -- logging to the client ---------------------------------------------
    def log(self, level: lsp.MessageType, message: str) -> None:
        """window/logMessage (event-loop thread only) plus our stderr log."""
        logger.log(_PYTHON_LEVELS.get(level, logging.INFO), "%s", message)
        self.window_log_message(lsp.LogMessageParams(type=level, message=message))

    def log_threadsafe(self, level: lsp.MessageType, message: str) -> None:
        """``log`` from a worker thread."""
        if self._loop is None:
            return
        try:
            self._loop.call_soon_threadsafe(self.log, level, message)
        except RuntimeError:  # the loop closed (session over): nobody to tell
            logger.info("%s", message)

    def log_once_a_while(self, key: str, level: lsp.MessageType, message: str) -> None:
        """``log``, but the same ``key`` at most once per REPEATED_ERROR_INTERVAL_S: no error storm."""
        now = time.monotonic()
        if now - self._last_error_at.get(key, -1e9) >= REPEATED_ERROR_INTERVAL_S:
            self._last_error_at[key] = now
            self.log(level, message)

    # -- settings ------------------------------------------------------------
    def apply_settings(self, raw: dict[str, Any] | None, source: str) -> None:
        """Merge the editor's settings; bad values are reported and ignored. Reconnects when the engine changes."""
        new, problems = self.settings.merged(raw)
        for problem in problems:
            self.log(lsp.MessageType.Warning, f"livefim: {source}: {problem}")
        if self.engine_address:  # the command line wins
            new = replace(new, engine=self.engine_address)
        if self.model:
            new = replace(new, model=self.model)
        old, self.settings = self.settings, new
        if (old.telemetry_enabled, old.telemetry_store) != (new.telemetry_enabled, new.telemetry_store) or not self.recorder.enabled:
            self._open_telemetry()
        self.ledger.persistence_delay_s = new.persistence_delay_s
        self._assign_arm()
        if self.link is not None and (old.engine, old.model) != (new.engine, new.model):
            self.log(lsp.MessageType.Info, f"livefim: engine settings changed; connecting to {new.engine or 'an embedded engine'}")
            self.reconnect()

    def _open_telemetry(self) -> None:
        self.recorder.close(timeout_s=1.0)
        if self.settings.telemetry_enabled:
            try:
                self.recorder = Recorder(open_store(self.settings.telemetry_store))
            except Exception as error:  # noqa: BLE001 - telemetry must never stop completions
                self.log(lsp.MessageType.Warning, f"livefim: telemetry store unavailable ({error}); telemetry is off")
                self.recorder = Recorder(None)
        else:
            self.recorder = Recorder(None)
        self.ledger.recorder = self.recorder

    def _assign_arm(self) -> None:
        path = self.settings.experiments_file or os.environ.get("LIVEFIM_EXPERIMENTS") or str(default_experiments_file())
        try:
            experiments = load_experiments(path)
        except ExperimentError as error:
            self.log(lsp.MessageType.Warning, f"livefim: experiments ignored: {error}")
            experiments = []
        user = self.settings.user_id or local_user_id()
        if experiments:
            experiment = experiments[0]
            self.experiment_name, self.arm = experiment.name, experiment.assign(user)
        else:
            self.experiment_name, self.arm = None, None
        self.ledger.set_context(user, self.experiment_name, self.arm.name if self.arm else None, self.settings.share_code)

    # -- engine connection -------------------------------------------------
    def connect(self) -> None:
        """Open the engine connection (fast: an embedded model loads later, in ``start_warm_up``)."""
        self._loop = asyncio.get_running_loop()
        address, model = self.settings.engine, self.settings.model
        try:
            connection = EngineConnection.open(address, model)
        except Exception as error:  # noqa: BLE001 - a server without an engine still answers (empty)
            self.log(lsp.MessageType.Error, f"livefim: cannot start the engine ({address or 'embedded'}): {error}")
            return
        self.link = EngineLink(connection, on_down=self._engine_down, on_back=self._engine_back)

    def reconnect(self) -> None:
        """Drop the current connection, open one for the current settings and re-send every document."""
        old, self.link = self.link, None
        if old is not None:
            threading.Thread(target=old.close, daemon=True).start()
        self.connect()
        if self.link is not None:
            self.start_warm_up()
            self._resync_all()

    def _engine_down(self, error: Exception) -> None:
        self.log_threadsafe(lsp.MessageType.Warning, f"livefim: engine unreachable ({error}); completions paused, reconnecting")

    def _engine_back(self) -> None:
        """From the reconnect thread: re-send the documents (in order with later edits), then resume."""
        if self._loop is not None:
            try:
                self._loop.call_soon_threadsafe(self._resync_all)
            except RuntimeError:
                pass

    def _resync_all(self) -> None:
        """On the event loop: snapshot every mirror and queue their re-opening ahead of any later edit."""
        link = self.link
        if link is None:
            return
        snapshots = [copy.copy(document) for document in self.documents.values()]

        def resend(client: EngineClient) -> None:
            for document in snapshots:
                _reopen(client, document)
            link.mark_up()
            self.stats.resyncs += 1
            self.log_threadsafe(lsp.MessageType.Info, f"livefim: engine reachable again; re-sent {len(snapshots)} document(s)")

        loop = asyncio.get_running_loop()
        self._last_sync = loop.run_in_executor(self._sync_executor, self._run_resync, link, resend)

    def _run_resync(self, link: EngineLink, resend: Callable[[EngineClient], None]) -> None:
        try:
            resend(link.client)
        except Exception as error:  # noqa: BLE001 - gone again, or refused: keep probing
            self.log_threadsafe(lsp.MessageType.Warning, f"livefim: re-sending documents failed ({error}); retrying")
            link.resync_failed()

    def start_warm_up(self) -> None:
        """Load the model (or wait for the remote engine) in a daemon thread, so exit never waits on it."""
        link = self.link
        if link is None:
            return

        def warm_up() -> None:
            try:
                link.connection.warm_up()
                self.log_threadsafe(lsp.MessageType.Info, f"livefim: ready, {link.connection.describe()}")
            except Exception as error:  # noqa: BLE001 - reported, requests will report again
                self.log_threadsafe(lsp.MessageType.Error, f"livefim: engine not ready: {error}")

        threading.Thread(target=warm_up, name="livefim-warm-up", daemon=True).start()

    async def index_workspace(self) -> None:
        """Give an embedded engine the first workspace folder's repository index (built or loaded in the background)."""
        link, root = self.link, self.workspace_root
        if link is None or root is None or link.connection.engine is None:
            if root is not None and link is not None and link.connection.engine is None:
                self.log(lsp.MessageType.Info, f"livefim: a remote engine indexes its own repository (livefim serve --repo); {root} not indexed here")
            return
        engine = link.connection.engine
        token = str(uuid.uuid4())
        progress_ok = bool(self.client_capabilities.window and self.client_capabilities.window.work_done_progress)

        def report(kind: str, message: str, percentage: int | None = None) -> None:
            if not progress_ok or self._loop is None:
                return
            progress = self.work_done_progress
            if kind == "begin":
                self._loop.call_soon_threadsafe(progress.begin, token, lsp.WorkDoneProgressBegin(
                    title="livefim: indexing", message=message, percentage=0))
            elif kind == "report":
                self._loop.call_soon_threadsafe(progress.report, token, lsp.WorkDoneProgressReport(message=message, percentage=percentage))
            else:
                self._loop.call_soon_threadsafe(progress.end, token, lsp.WorkDoneProgressEnd(message=message))

        def build() -> None:
            from engine.repo_context import open_repo_context

            shown = {"step": -1}

            def progress(done: int, total: int) -> None:
                step = done * 100 // max(total, 1)
                if step >= shown["step"] + 5 or done == total:
                    shown["step"] = step
                    report("report", f"{done}/{total} files", step)

            try:
                report("begin", str(root))
                started = time.monotonic()
                engine.repo_context = open_repo_context(root, progress=progress)
                files = len(engine.repo_context.index.files)
                report("end", f"{files} files")
                self.log_threadsafe(lsp.MessageType.Info, f"livefim: indexed {root} ({files} files, {time.monotonic() - started:.1f} s)")
            except Exception as error:  # noqa: BLE001 - context is an aid: completions go on without it
                report("end", "failed")
                self.log_threadsafe(lsp.MessageType.Warning, f"livefim: indexing {root} failed: {error}")

        if progress_ok:
            try:
                await asyncio.wait_for(self.work_done_progress.create_async(token), 5.0)
            except Exception:  # noqa: BLE001 - no progress bar, same indexing
                progress_ok = False
        threading.Thread(target=build, name="livefim-index", daemon=True).start()

    def disconnect(self) -> None:
        link, self.link = self.link, None
        for task in self._background:
            task.cancel()
        self.ledger.close()
        self.recorder.close(timeout_s=2.0)
        self._sync_executor.shutdown(wait=False, cancel_futures=True)
        if link is not None:
            link.close()

    # -- document sync (called on the event loop, runs in order off it) ----
    def submit_sync(self, what: str, call: Callable[[EngineClient], Any], resync: MirroredDocument | None = None) -> None:
        """Queue one document update; on failure log it and, given ``resync``, reopen the document from it."""
        link = self.link
        if link is None:
            return
        loop = asyncio.get_running_loop()
        self._last_sync = loop.run_in_executor(self._sync_executor, self._run_sync, link, what, call, resync)

    def _run_sync(self, link: EngineLink, what: str, call: Callable[[EngineClient], Any], resync: MirroredDocument | None) -> None:
        if not link.up:
            return  # the mirrors keep the truth; everything is re-sent when the engine is back
        try:
            call(link.client)
            return
        except Exception as error:  # noqa: BLE001 - logged; the mirror lets us recover
            if link.failed(error):
                return
            self.log_threadsafe(lsp.MessageType.Error, f"livefim: {what} failed: {error}")
        if resync is not None:
            try:
                _reopen(link.client, resync)
                self.log_threadsafe(lsp.MessageType.Info, f"livefim: resent {resync.uri} (version {resync.version})")
            except Exception as error:  # noqa: BLE001
                self.log_threadsafe(lsp.MessageType.Error, f"livefim: resending {resync.uri} failed: {error}")

    # -- requests in flight ----------------------------------------------------
    def supersede(self, uri: str) -> None:
        """The request in flight for ``uri`` is obsolete: answer it empty and stop its decode."""
        flight = self._in_flight.pop(uri, None)
        if flight is None:
            return
        flight.superseded = True
        link = self.link
        if link is not None:
            threading.Thread(target=_cancel_quietly, args=(link.client, flight.request_id), daemon=True).start()

    def completion_options(self, alternatives: int) -> CompletionOptions:
        """What to ask the engine: the user's settings, then the experiment arm's options."""
        options: dict[str, Any] = {"max_lines": self.settings.max_lines, "suggestions": alternatives}
        if self.arm is not None:
            for key, value in self.arm.options.items():
                if key == "suggestions" and alternatives == 1:
                    continue  # an arm's k applies to explicit invokes; typing always streams one
                options[key] = value
        return CompletionOptions(**options)

    # -- completion ----------------------------------------------------------
    async def suggest(self, uri: str, position: lsp.Position, alternatives: int = 1, invoked: bool = False) -> Suggestion | None:
        """The engine's completion at a client position, or None when there is none (superseded, no engine...).

        ``alternatives`` > 1 asks for that many distinct suggestions (superposed
        decoding: about the time of one). While typing, the typed-ahead cache
        answers first, and the request waits the debounce before reaching the engine."""
        received = time.monotonic()
        document = self.documents.get(uri)
        link = self.link
        if document is None or link is None:
            self.log(lsp.MessageType.Warning, f"livefim: no completion for {uri}: {'not open' if link else 'no engine'}")
            return None
        self.stats.requests += 1
        # Snapshot everything before the first await: later edits must not move this request.
        encoding = self.encoding
        cursor = document.clamped_client_position(position, encoding)
        word = document.word_before(position, encoding)
        offset = document.offset(position, encoding)
        line_start = document.text.rfind("\n", 0, offset) + 1
        line_prefix = document.text[line_start:offset]
        word_units = column_from_code_points(word, len(word), encoding)
        word_start = lsp.Position(line=cursor.line, character=cursor.character - word_units)
        if not invoked:
            hit = self.typed_ahead.lookup(uri, cursor.line, line_prefix)
            if hit is not None:
                text, suggestion_id = hit
                record = self.ledger.get(suggestion_id)
                if record is not None and record.outcome is None:
                    record.served_from = len(record.text) - len(text)
                    self.stats.typed_ahead_hits += 1
                    self.stats.answered += 1
                    self.stats.latencies_ms.append((time.monotonic() - received) * 1000)
                    return Suggestion(text, cursor, word, word_start, (), (suggestion_id,))
        if not link.up:
            self.stats.skipped_engine_down += 1
            return None
        request = CompletionRequest(
            request_id=f"lsp-{uuid.uuid4().hex}",
            uri=uri,
            position=document.engine_position(position, encoding),
            version=document.version,
            options=self.completion_options(alternatives),
        )
        self.supersede(uri)
        flight = _InFlight(request.request_id)
        self._in_flight[uri] = flight
        try:
            if not invoked:
                cadence = self.cadence.get(uri)
                await asyncio.sleep(cadence.delay_s(self.settings.debounce_ms) if cadence else 0.0)
            pending = self._last_sync
            if pending is not None and not flight.superseded:
                await asyncio.shield(pending)
            if flight.superseded:
                self.stats.cancelled += 1
                return None
            self.stats.engine_requests += 1
            final = await asyncio.to_thread(_final_chunk, link.client, request)
            if flight.superseded or final is None:
                self.stats.cancelled += 1
                return None
        except asyncio.CancelledError:  # $/cancelRequest: stop the decode too
            self.stats.cancelled += 1
            threading.Thread(target=_cancel_quietly, args=(link.client, request.request_id), daemon=True).start()
            raise
        except Exception as error:  # noqa: BLE001 - never fail the request for an engine problem
            if isinstance(error, _QUIET_ERRORS):
                self.stats.cancelled += 1
                self.log(lsp.MessageType.Log, f"livefim: completion at {uri}:{position.line}:{position.character} obsolete: {error}")
                return None
            if isinstance(error, ModelUnavailable) and await asyncio.to_thread(link.failed, error):
                return None  # the link said so once; it reconnects and re-sends the documents
            if isinstance(error, DocumentNotFound):  # the engine restarted and lost it: send it again
                snapshot = copy.copy(document)
                self.submit_sync(f"reopening {uri}", lambda client: _reopen(client, snapshot))
            self.stats.errors += 1
            self.log_once_a_while(f"{type(error).__name__}:{error}", lsp.MessageType.Error,
                                  f"livefim: completion at {uri}:{position.line}:{position.character} failed: {type(error).__name__}: {error}")
            return None
        finally:
            if self._in_flight.get(uri) is flight:
                del self._in_flight[uri]
        texts = [final.text, *final.alternatives]
        if not final.text:
            return Suggestion("", cursor, word, word_start)
        latency_ms = (time.monotonic() - received) * 1000
        records = [self.ledger.new(uri, offset, text, document.language_id, model=final.model, cache_mode=final.cache_mode,
                                   speculation=final.speculation, suggestions=alternatives, latency_ms=latency_ms)
                   for text in texts if text]
        self.typed_ahead.remember(uri, cursor.line, line_prefix, final.text, records[0].suggestion_id)
        self.stats.answered += 1
        self.stats.latencies_ms.append(latency_ms)
        return Suggestion(final.text, cursor, word, word_start, tuple(t for t in final.alternatives if t),
                          tuple(r.suggestion_id for r in records))

    async def check_persistence_forever(self) -> None:
        while True:
            await asyncio.sleep(PERSISTENCE_POLL_S)
            self.ledger.due_checks(lambda uri: self.documents[uri].text if uri in self.documents else None)


def _final_chunk(client: EngineClient, request: CompletionRequest) -> CompletionChunk | None:
    """Blocking: run a completion stream to its end; chunks are cumulative, so the last one is the answer."""
    final = None
    for chunk in client.complete(request):
        final = chunk
        if chunk.done:
            break
    return final


def _cancel_quietly(client: EngineClient, request_id: str) -> None:
    try:
        client.cancel(request_id)
    except Exception:  # noqa: BLE001 - the request may be over or the engine gone; nothing to do
        pass


def _reopen(client: EngineClient, document: MirroredDocument) -> None:
    """Blocking: make the engine's copy equal ``document`` (close if present, then open)."""
    try:
        client.close_document(document.uri)
    except DocumentNotFound:
        pass
    client.open_document(document.uri, document.language_id, document.version, document.text)


def _open(client: EngineClient, document: MirroredDocument) -> None:
    try:
        client.open_document(document.uri, document.language_id, document.version, document.text)
    except DocumentAlreadyOpen:  # left over from an earlier session on a shared engine
        _reopen(client, document)


def _close(client: EngineClient, uri: str) -> None:
    try:
        client.close_document(uri)
    except DocumentNotFound:
        pass


def _path_of_uri(uri: str) -> Path | None:
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        return None
    return Path(unquote(parsed.path))


def _field(params: Any, name: str) -> Any:
    """A field of a custom notification's params, which pygls hands over as an object or a dict."""
    if isinstance(params, dict):
        return params.get(name)
    return getattr(params, name, None)


# -- handlers --------------------------------------------------------------


def initialize(ls: LivefimLanguageServer, params: lsp.InitializeParams) -> None:
    """Settings from ``initializationOptions`` (the same keys as the ``livefim`` configuration section, plus
    ``completionItems: bool``); connect to the engine; offer completion items only to clients without inline
    completion; remember the first workspace folder for the repository index."""
    options = params.initialization_options if isinstance(params.initialization_options, dict) else {}
    if ls.engine_address and options.get("engine") and options["engine"] != ls.engine_address:
        ls.log(lsp.MessageType.Warning, f"livefim: using --engine {ls.engine_address}, not {options['engine']}")
    ls.apply_settings({k: v for k, v in options.items() if k != "completionItems"}, "initializationOptions")
    ls.connect()
    has_inline = params.capabilities.text_document is not None and params.capabilities.text_document.inline_completion is not None
    if options.get("completionItems", not has_inline):
        ls.feature(lsp.TEXT_DOCUMENT_COMPLETION, lsp.CompletionOptions())(completion)
    folders = params.workspace_folders or []
    root = _path_of_uri(folders[0].uri) if folders else (_path_of_uri(params.root_uri) if params.root_uri else None)
    ls.workspace_root = root if root is not None and root.is_dir() else None


async def initialized(ls: LivefimLanguageServer, params: lsp.InitializedParams) -> None:
    ls.start_warm_up()
    await ls.index_workspace()
    ls._background.append(asyncio.ensure_future(ls.check_persistence_forever()))
    workspace = ls.client_capabilities.workspace
    if workspace is not None and workspace.configuration:
        await _pull_configuration(ls)


async def _pull_configuration(ls: LivefimLanguageServer) -> None:
    try:
        values = await asyncio.wait_for(
            ls.workspace_configuration_async(lsp.ConfigurationParams(items=[lsp.ConfigurationItem(section=SECTION)])), 10.0)
    except Exception as error:  # noqa: BLE001 - a client that cannot answer keeps the defaults
        ls.log(lsp.MessageType.Log, f"livefim: workspace/configuration unavailable: {error}")
        return
    ls.apply_settings(values[0] if values else None, "settings")


async def did_change_configuration(ls: LivefimLanguageServer, params: lsp.DidChangeConfigurationParams) -> None:
    settings = params.settings
    if isinstance(settings, dict) and isinstance(settings.get(SECTION), dict):
        ls.apply_settings(settings[SECTION], "settings")  # pushed
    elif ls.client_capabilities.workspace is not None and ls.client_capabilities.workspace.configuration:
        await _pull_configuration(ls)  # the client says "changed": ask for the section


async def shutdown(ls: LivefimLanguageServer, params: None) -> None:
    await asyncio.to_thread(ls.disconnect)


def did_open(ls: LivefimLanguageServer, params: lsp.DidOpenTextDocumentParams) -> None:
    item = params.text_document
    document = MirroredDocument(item.uri, item.language_id, item.version, item.text)
    ls.documents[item.uri] = document
    ls.cadence[item.uri] = TypingCadence()
    snapshot = copy.copy(document)
    ls.submit_sync(f"opening {item.uri}", lambda client: _open(client, snapshot))


def did_change(ls: LivefimLanguageServer, params: lsp.DidChangeTextDocumentParams) -> None:
    uri, version = params.text_document.uri, params.text_document.version
    document = ls.documents.get(uri)
    if document is None:
        ls.log(lsp.MessageType.Error, f"livefim: change to {uri}, which is not open")
        return
    ls.supersede(uri)  # whatever was being computed describes text that no longer exists
    ls.cadence.setdefault(uri, TypingCadence()).keystroke(time.monotonic())
    encoding = ls.encoding
    edits = []
    for change in params.content_changes:
        applied = document.apply(change, encoding)
        ls.ledger.edited(uri, applied.start, applied.end, applied.edit.text)
        edits.append(applied.edit)
    document.version = version
    ls.ledger.place_accepted(uri, document.text)
    snapshot = copy.copy(document)  # text is an immutable str: the copy is the state after this batch
    ls.submit_sync(
        f"edit of {uri} to version {version}",
        lambda client: client.edit_document(uri, version, edits),
        resync=snapshot,
    )


def did_close(ls: LivefimLanguageServer, params: lsp.DidCloseTextDocumentParams) -> None:
    uri = params.text_document.uri
    ls.supersede(uri)
    ls.documents.pop(uri, None)
    ls.cadence.pop(uri, None)
    ls.typed_ahead.forget(uri)
    ls.ledger.document_closed(uri)
    ls.submit_sync(f"closing {uri}", lambda client: _close(client, uri))


def _accept_command(suggestion_id: str) -> lsp.Command:
    return lsp.Command(title="livefim: suggestion accepted", command=ACCEPT_COMMAND, arguments=[suggestion_id])


async def inline_completion(ls: LivefimLanguageServer, params: lsp.InlineCompletionParams) -> lsp.InlineCompletionList:
    """The engine's text inserted at the cursor (an empty range there): one item while typing, and up
    to ``ALTERNATIVES_ON_INVOKE`` distinct items when the user asks (what clients cycle through). Each
    item's command reports its acceptance."""
    invoked = params.context is not None and params.context.trigger_kind == lsp.InlineCompletionTriggerKind.Invoked
    k = ALTERNATIVES_ON_INVOKE
    if invoked and ls.arm is not None and isinstance(ls.arm.options.get("suggestions"), int):
        k = ls.arm.options["suggestions"]
    suggestion = await ls.suggest(params.text_document.uri, params.position, k if invoked else 1, invoked=invoked)
    if suggestion is None or not suggestion.text:
        return lsp.InlineCompletionList(items=[])
    at_cursor = lsp.Range(start=suggestion.cursor, end=suggestion.cursor)
    texts = [suggestion.text, *suggestion.alternatives]
    return lsp.InlineCompletionList(items=[
        lsp.InlineCompletionItem(insert_text=text, range=at_cursor, command=_accept_command(sid) if sid else None)
        for text, sid in zip(texts, list(suggestion.ids) + [""] * (len(texts) - len(suggestion.ids)))
    ])


async def completion(ls: LivefimLanguageServer, params: lsp.CompletionParams) -> lsp.CompletionList:
    """One item for menu-only clients; it replaces the word before the cursor by word + completion,
    so the client's prefix filter (on the typed word) keeps it. Incomplete: ask again as the user types."""
    suggestion = await ls.suggest(params.text_document.uri, params.position)
    if suggestion is None or not suggestion.text:
        return lsp.CompletionList(is_incomplete=True, items=[])
    new_text = suggestion.word + suggestion.text
    label = next((line for line in new_text.splitlines() if line.strip()), new_text)
    item = lsp.CompletionItem(
        label=label,
        kind=lsp.CompletionItemKind.Text,
        detail="livefim",
        filter_text=new_text,
        sort_text="0",
        insert_text_format=lsp.InsertTextFormat.PlainText,
        text_edit=lsp.TextEdit(range=lsp.Range(start=suggestion.word_start, end=suggestion.cursor), new_text=new_text),
        command=_accept_command(suggestion.ids[0]) if suggestion.ids else None,
    )
    return lsp.CompletionList(is_incomplete=True, items=[item])


def did_show(ls: LivefimLanguageServer, params: Any) -> None:
    suggestion_id = _field(params, "id")
    if not isinstance(suggestion_id, str) or not ls.ledger.shown(suggestion_id):
        ls.log(lsp.MessageType.Log, f"livefim/didShow: unknown suggestion {suggestion_id!r}")


def did_accept(ls: LivefimLanguageServer, params: Any) -> None:
    _accept(ls, _field(params, "id"), _field(params, "acceptedLength"))


def did_reject(ls: LivefimLanguageServer, params: Any) -> None:
    suggestion_id = _field(params, "id")
    if isinstance(suggestion_id, str):
        ls.ledger.rejected(suggestion_id)


def accept_command(ls: LivefimLanguageServer, *arguments: Any) -> None:
    """``workspace/executeCommand livefim.accept [id, acceptedLength?]``: what an item's command runs on accept
    (pygls passes the arguments one by one)."""
    _accept(ls, arguments[0] if arguments else None, arguments[1] if len(arguments) > 1 else None)


def _accept(ls: LivefimLanguageServer, suggestion_id: Any, accepted_length: Any) -> None:
    if not isinstance(suggestion_id, str):
        ls.log(lsp.MessageType.Log, f"livefim: accept without a suggestion id ({suggestion_id!r})")
        return
    record = ls.ledger.get(suggestion_id)
    if record is None:
        ls.log(lsp.MessageType.Log, f"livefim: accept of unknown suggestion {suggestion_id!r}")
        return
    served_from = record.served_from
    length = None if not isinstance(accepted_length, int) else served_from + accepted_length
    if length is None and served_from:
        length = len(record.text)
    document = ls.documents.get(record.uri)
    ls.ledger.accepted(suggestion_id, length, document.text if document else None)
    ls.typed_ahead.forget(record.uri)


def stats_request(ls: LivefimLanguageServer, params: Any) -> dict[str, Any]:
    """``livefim/stats``: the server's counters (benchmarks, tests)."""
    s = ls.stats
    latencies = sorted(s.latencies_ms)
    return {
        "requests": s.requests, "engine_requests": s.engine_requests, "cancelled": s.cancelled,
        "typed_ahead_hits": s.typed_ahead_hits, "answered": s.answered, "skipped_engine_down": s.skipped_engine_down,
        "errors": s.errors, "resyncs": s.resyncs, "latencies_ms": latencies,
        "telemetry_pending": ls.recorder.pending, "telemetry_written": ls.recorder.written,
        "persistence_pending": ls.ledger.pending_checks, "experiment": ls.experiment_name,
        "arm": ls.arm.name if ls.arm else None,
        "settings": {"engine": ls.settings.engine, "model": ls.settings.model, "max_lines": ls.settings.max_lines,
                     "debounce_ms": ls.settings.debounce_ms, "telemetry_enabled": ls.settings.telemetry_enabled},
        "repository": str(ls.workspace_root) if ls.workspace_root else None,
        "repository_indexed": bool(ls.link and ls.link.connection.engine is not None and ls.link.connection.engine.repo_context),
    }


def create_server(engine_address: str | None = None, model: str | None = None, experiments_file: str | None = None) -> LivefimLanguageServer:
    """A server with our handlers registered (textDocument/completion is added at initialize if wanted)."""
    server = LivefimLanguageServer(engine_address, model, experiments_file)
    server.feature(lsp.INITIALIZE)(initialize)
    server.feature(lsp.INITIALIZED)(initialized)
    server.feature(lsp.SHUTDOWN)(shutdown)
    server.feature(lsp.WORKSPACE_DID_CHANGE_CONFIGURATION)(did_change_configuration)
    server.feature(lsp.TEXT_DOCUMENT_DID_OPEN)(did_open)
    server.feature(lsp.TEXT_DOCUMENT_DID_CHANGE)(did_change)
    server.feature(lsp.TEXT_DOCUMENT_DID_CLOSE)(did_close)
    server.feature(lsp.TEXT_DOCUMENT_INLINE_COMPLETION, lsp.InlineCompletionOptions())(inline_completion)
    server.feature("livefim/didShow")(did_show)
    server.feature("livefim/didAccept")(did_accept)
    server.feature("livefim/didReject")(did_reject)
    server.feature("livefim/stats")(stats_request)
    server.command(ACCEPT_COMMAND)(accept_command)
    return server


def run_stdio(engine_address: str | None = None, model: str | None = None, experiments_file: str | None = None) -> None:
    """Serve LSP on stdin/stdout until the client says exit.

    File descriptor 1 carries only the protocol: anything else that writes to
    stdout (a library's print, a subprocess) is sent to stderr instead.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "ACTIVE")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="livefim-lsp %(levelname)s %(name)s: %(message)s")
    protocol_out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")  # buffered: pygls flushes each message
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    server = create_server(engine_address, model, experiments_file)
    try:
        server.start_io(sys.stdin.buffer, protocol_out)
    finally:
        if server.link is not None:  # the client exited without shutdown
            server.disconnect()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lsp.server", description=__doc__.split("\n")[0])
    parser.add_argument("--engine", metavar="HOST:PORT", help="a running `livefim serve` (default: embedded engine)")
    parser.add_argument("--model", help="model for the embedded engine (default: $LIVEFIM_MODEL or the registry default)")
    parser.add_argument("--experiments", metavar="FILE", help="A/B experiments (default: $LIVEFIM_HOME/experiments.toml)")
    args = parser.parse_args(argv)
    run_stdio(args.engine, args.model, args.experiments)


if __name__ == "__main__":
    main()
