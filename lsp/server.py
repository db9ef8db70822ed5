"""``livefim lsp``: a stdio language server that forwards edits to the engine and asks it for completions.

Why thin: the server only (1) keeps a mirror of each open document to convert
client positions (UTF-16 by default) to the engine's code points, (2) forwards
opens/edits/closes in order, and (3) turns a completion request into one engine
call. Everything slow runs off the event loop; an engine error is logged to the
client (``window/logMessage``) and answered with an empty result.

Ordering: document updates go to the engine through one single-thread executor,
so they arrive in the order the client sent them; a completion first waits for
the updates sent before it, then asks for the version it saw.

Run::

    python -m lsp.server [--engine HOST:PORT] [--model NAME]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import logging
import os
import sys
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

from lsprotocol import types as lsp
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol
from pygls.protocol.language_server import lsp_method

from engine.client import EngineClient
from engine.errors import Cancelled, DocumentAlreadyOpen, DocumentNotFound, EngineError, StaleVersion
from engine.types import CompletionOptions, CompletionRequest
from lsp.documents import MirroredDocument
from lsp.engine_link import EngineConnection
from lsp.positions import Encoding, column_from_code_points

logger = logging.getLogger("livefim.lsp")

_PYTHON_LEVELS = {lsp.MessageType.Error: logging.ERROR, lsp.MessageType.Warning: logging.WARNING}

# Errors that mean "this completion is obsolete", not "something is wrong".
_QUIET_ERRORS = (StaleVersion, Cancelled)


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
    """State of one LSP session: the engine connection and the document mirrors."""

    def __init__(self, engine_address: str | None = None, model: str | None = None) -> None:
        super().__init__(
            "livefim", _version(), text_document_sync_kind=lsp.TextDocumentSyncKind.Incremental, protocol_cls=_Protocol
        )
        self.engine_address = engine_address
        self.model = model
        self.connection: EngineConnection | None = None
        self.documents: dict[str, MirroredDocument] = {}
        self._sync_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="livefim-sync")
        self._last_sync: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

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

    # -- engine connection -------------------------------------------------
    def connect(self, address: str | None, model: str | None) -> None:
        """Open the engine connection (fast: an embedded model loads later, in ``start_warm_up``)."""
        self._loop = asyncio.get_running_loop()
        try:
            self.connection = EngineConnection.open(address, model)
        except Exception as error:  # noqa: BLE001 - a server without an engine still answers (empty)
            self.log(lsp.MessageType.Error, f"livefim: cannot start the engine ({address or 'embedded'}): {error}")

    def start_warm_up(self) -> None:
        """Load the model (or wait for the remote engine) in a daemon thread, so exit never waits on it."""
        connection = self.connection
        if connection is None:
            return

        def warm_up() -> None:
            try:
                connection.warm_up()
                self.log_threadsafe(lsp.MessageType.Info, f"livefim: ready, {connection.describe()}")
            except Exception as error:  # noqa: BLE001 - reported, requests will report again
                self.log_threadsafe(lsp.MessageType.Error, f"livefim: engine not ready: {error}")

        threading.Thread(target=warm_up, name="livefim-warm-up", daemon=True).start()

    def disconnect(self) -> None:
        connection, self.connection = self.connection, None
        self._sync_executor.shutdown(wait=False, cancel_futures=True)
        if connection is not None:
            connection.close()

    # -- document sync (called on the event loop, runs in order off it) ----
    def submit_sync(self, what: str, call: Callable[[EngineClient], Any], resync: MirroredDocument | None = None) -> None:
        """Queue one document update; on failure log it and, given ``resync``, reopen the document from it."""
        connection = self.connection
        if connection is None:
            return
        loop = asyncio.get_running_loop()
        self._last_sync = loop.run_in_executor(self._sync_executor, self._run_sync, connection.client, what, call, resync)

    def _run_sync(
        self, client: EngineClient, what: str, call: Callable[[EngineClient], Any], resync: MirroredDocument | None
    ) -> None:
        try:
            call(client)
            return
        except Exception as error:  # noqa: BLE001 - logged; the mirror lets us recover
            self.log_threadsafe(lsp.MessageType.Error, f"livefim: {what} failed: {error}")
        if resync is not None:
            try:
                _reopen(client, resync)
                self.log_threadsafe(lsp.MessageType.Info, f"livefim: resent {resync.uri} (version {resync.version})")
            except Exception as error:  # noqa: BLE001
                self.log_threadsafe(lsp.MessageType.Error, f"livefim: resending {resync.uri} failed: {error}")

    # -- completion ----------------------------------------------------------
    async def suggest(self, uri: str, position: lsp.Position, alternatives: int = 1) -> Suggestion | None:
        """The engine's completion at a client position, or None (logged) when there is none.

        ``alternatives`` > 1 asks the engine for that many distinct suggestions
        (superposed decoding: about the time of one)."""
        document = self.documents.get(uri)
        connection = self.connection
        if document is None or connection is None:
            self.log(lsp.MessageType.Warning, f"livefim: no completion for {uri}: {'not open' if connection else 'no engine'}")
            return None
        # Snapshot everything before the first await: later edits must not move this request.
        encoding = self.encoding
        request = CompletionRequest(
            request_id=f"lsp-{uuid.uuid4().hex}",
            uri=uri,
            position=document.engine_position(position, encoding),
            version=document.version,
            options=CompletionOptions(suggestions=alternatives),
        )
        cursor = document.clamped_client_position(position, encoding)
        word = document.word_before(position, encoding)
        pending = self._last_sync
        try:
            if pending is not None:
                await asyncio.shield(pending)
            text, others = await asyncio.to_thread(_final_text, connection.client, request)
        except asyncio.CancelledError:  # $/cancelRequest: stop the decode too
            threading.Thread(target=_cancel_quietly, args=(connection.client, request.request_id), daemon=True).start()
            raise
        except Exception as error:  # noqa: BLE001 - never fail the request for an engine problem
            level = lsp.MessageType.Log if isinstance(error, _QUIET_ERRORS) else lsp.MessageType.Error
            where = f"{uri}:{position.line}:{position.character}"
            self.log(level, f"livefim: completion at {where} failed: {type(error).__name__}: {error}")
            return None
        word_units = column_from_code_points(word, len(word), encoding)
        word_start = lsp.Position(line=cursor.line, character=cursor.character - word_units)
        return Suggestion(text=text, cursor=cursor, word=word, word_start=word_start, alternatives=others)


def _final_text(client: EngineClient, request: CompletionRequest) -> tuple[str, tuple[str, ...]]:
    """Blocking: run a completion stream to its end; chunks are cumulative, so the last one is the answer
    (with any alternatives)."""
    text, alternatives = "", ()
    for chunk in client.complete(request):
        text, alternatives = chunk.text, chunk.alternatives
        if chunk.done:
            break
    return text, alternatives


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


# -- handlers --------------------------------------------------------------


def initialize(ls: LivefimLanguageServer, params: lsp.InitializeParams) -> None:
    """Connect to the engine; offer completion items only to clients without inline completion.

    ``initializationOptions``: ``{"engine": "host:port", "model": NAME, "completionItems": bool}``,
    all optional; ``--engine``/``--model`` on the command line win.
    """
    options = params.initialization_options if isinstance(params.initialization_options, dict) else {}
    address = ls.engine_address or options.get("engine") or None
    model = ls.model or options.get("model") or None
    if ls.engine_address and options.get("engine") and options["engine"] != ls.engine_address:
        ls.log(lsp.MessageType.Warning, f"livefim: using --engine {ls.engine_address}, not {options['engine']}")
    ls.connect(address, model)
    has_inline = params.capabilities.text_document is not None and params.capabilities.text_document.inline_completion is not None
    if options.get("completionItems", not has_inline):
        ls.feature(lsp.TEXT_DOCUMENT_COMPLETION, lsp.CompletionOptions())(completion)


def initialized(ls: LivefimLanguageServer, params: lsp.InitializedParams) -> None:
    ls.start_warm_up()


async def shutdown(ls: LivefimLanguageServer, params: None) -> None:
    await asyncio.to_thread(ls.disconnect)


def did_open(ls: LivefimLanguageServer, params: lsp.DidOpenTextDocumentParams) -> None:
    item = params.text_document
    document = MirroredDocument(item.uri, item.language_id, item.version, item.text)
    ls.documents[item.uri] = document
    snapshot = copy.copy(document)
    ls.submit_sync(f"opening {item.uri}", lambda client: _open(client, snapshot))


def did_change(ls: LivefimLanguageServer, params: lsp.DidChangeTextDocumentParams) -> None:
    uri, version = params.text_document.uri, params.text_document.version
    document = ls.documents.get(uri)
    if document is None:
        ls.log(lsp.MessageType.Error, f"livefim: change to {uri}, which is not open")
        return
    encoding = ls.encoding
    edits = [document.apply_change(change, encoding) for change in params.content_changes]
    document.version = version
    snapshot = copy.copy(document)  # text is an immutable str: the copy is the state after this batch
    ls.submit_sync(
        f"edit of {uri} to version {version}",
        lambda client: client.edit_document(uri, version, edits),
        resync=snapshot,
    )


def did_close(ls: LivefimLanguageServer, params: lsp.DidCloseTextDocumentParams) -> None:
    uri = params.text_document.uri
    ls.documents.pop(uri, None)
    ls.submit_sync(f"closing {uri}", lambda client: _close(client, uri))


ALTERNATIVES_ON_INVOKE = 3  # suggestions asked for when the user invokes (or cycles) explicitly


async def inline_completion(ls: LivefimLanguageServer, params: lsp.InlineCompletionParams) -> lsp.InlineCompletionList:
    """The engine's text inserted at the cursor (an empty range there): one item while typing, and up
    to ``ALTERNATIVES_ON_INVOKE`` distinct items when the user asks (what clients cycle through)."""
    invoked = params.context is not None and params.context.trigger_kind == lsp.InlineCompletionTriggerKind.Invoked
    suggestion = await ls.suggest(params.text_document.uri, params.position, ALTERNATIVES_ON_INVOKE if invoked else 1)
    if suggestion is None or not suggestion.text:
        return lsp.InlineCompletionList(items=[])
    at_cursor = lsp.Range(start=suggestion.cursor, end=suggestion.cursor)
    texts = [suggestion.text, *(t for t in suggestion.alternatives if t)]
    return lsp.InlineCompletionList(items=[lsp.InlineCompletionItem(insert_text=t, range=at_cursor) for t in texts])


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
    )
    return lsp.CompletionList(is_incomplete=True, items=[item])


def create_server(engine_address: str | None = None, model: str | None = None) -> LivefimLanguageServer:
    """A server with our handlers registered (textDocument/completion is added at initialize if wanted)."""
    server = LivefimLanguageServer(engine_address, model)
    server.feature(lsp.INITIALIZE)(initialize)
    server.feature(lsp.INITIALIZED)(initialized)
    server.feature(lsp.SHUTDOWN)(shutdown)
    server.feature(lsp.TEXT_DOCUMENT_DID_OPEN)(did_open)
    server.feature(lsp.TEXT_DOCUMENT_DID_CHANGE)(did_change)
    server.feature(lsp.TEXT_DOCUMENT_DID_CLOSE)(did_close)
    server.feature(lsp.TEXT_DOCUMENT_INLINE_COMPLETION, lsp.InlineCompletionOptions())(inline_completion)
    return server


def run_stdio(engine_address: str | None = None, model: str | None = None) -> None:
    """Serve LSP on stdin/stdout until the client says exit.

    File descriptor 1 carries only the protocol: anything else that writes to
    stdout (a library's print, a subprocess) is sent to stderr instead.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "ACTIVE")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="livefim-lsp %(levelname)s %(name)s: %(message)s")
    protocol_out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")  # buffered: pygls flushes each message
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    server = create_server(engine_address, model)
    try:
        server.start_io(sys.stdin.buffer, protocol_out)
    finally:
        if server.connection is not None:  # the client exited without shutdown
            server.disconnect()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lsp.server", description=__doc__.split("\n")[0])
    parser.add_argument("--engine", metavar="HOST:PORT", help="a running `livefim serve` (default: embedded engine)")
    parser.add_argument("--model", help="model for the embedded engine (default: $LIVEFIM_MODEL or the registry default)")
    args = parser.parse_args(argv)
    run_stdio(args.engine, args.model)


if __name__ == "__main__":
    main()
