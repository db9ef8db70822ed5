"""The completion engine: open documents plus a model, completing at a position.

Why one class: it owns the state the gRPC service exposes (documents, the
model, in-flight requests) and nothing else; prompt building, decoding and
post-processing are pure functions in their own modules.

Example::

    engine = CompletionEngine(load_model())
    engine.open_document("file:///a.py", "python", 1, "def add(a, b):\\n    return ")
    for chunk in engine.complete(CompletionRequest("r1", "file:///a.py", Position(1, 11))):
        print(chunk.text)          # grows token by token; the last chunk has done=True
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Iterator

from engine.decode import decode
from engine.documents import DocumentStore
from engine.errors import InvalidInput, ModelUnavailable, StaleVersion
from engine.prompt import PromptBudget, build_fim_prompt
from engine.runtime import LoadedModel
from engine.stops import CompletionContext, decide_scope
from engine.types import (
    CompletionChunk,
    CompletionOptions,
    CompletionRequest,
    DocumentState,
    FinishReason,
    Position,
    TextEdit,
    Timings,
)

MAX_TOKENS_LIMIT = 1024


class CompletionEngine:
    def __init__(
        self,
        model: LoadedModel | Callable[[], LoadedModel],
        *,
        store: DocumentStore | None = None,
        budget: PromptBudget | None = None,
    ) -> None:
        self._model = model if isinstance(model, LoadedModel) else None
        self._model_factory = None if isinstance(model, LoadedModel) else model
        self.documents = store or DocumentStore()
        self.budget = budget or PromptBudget()
        self._model_lock = threading.Lock()  # one decode at a time on one model
        self._load_lock = threading.Lock()
        self._cancel_events: dict[str, threading.Event] = {}
        self._cancel_lock = threading.Lock()

    # -- model -------------------------------------------------------------
    @property
    def model(self) -> LoadedModel:
        if self._model is None:
            with self._load_lock:
                if self._model is None:
                    assert self._model_factory is not None
                    try:
                        self._model = self._model_factory()
                    except Exception as error:  # surfaced to clients as UNAVAILABLE
                        raise ModelUnavailable(f"model could not be loaded: {error}") from error
        return self._model

    def warm_up(self) -> None:
        """Load the model now rather than on the first completion."""
        _ = self.model

    # -- documents ---------------------------------------------------------
    def open_document(self, uri: str, language_id: str, version: int, text: str) -> DocumentState:
        return self.documents.open(uri, language_id, version, text).state()

    def edit_document(self, uri: str, version: int, edits: list[TextEdit]) -> DocumentState:
        return self.documents.edit(uri, version, edits).state()

    def close_document(self, uri: str) -> None:
        self.documents.close(uri)

    # -- completion --------------------------------------------------------
    def cancel(self, request_id: str) -> bool:
        """Ask an in-flight request to stop; False when no such request runs."""
        with self._cancel_lock:
            event = self._cancel_events.get(request_id)
        if event is None:
            return False
        event.set()
        return True

    def complete(self, request: CompletionRequest) -> Iterator[CompletionChunk]:
        """Stream a completion at a position of an open document."""
        document = self.documents.get(request.uri)
        if request.version is not None and request.version != document.version:
            raise StaleVersion(
                f"{request.uri}: completion asked for version {request.version}, document is at {document.version}"
            )
        prefix, suffix = document.split_at(request.position)
        yield from self.complete_text(
            prefix, suffix, path=_path_of(request.uri), request_id=request.request_id, options=request.options
        )

    def complete_text(
        self,
        prefix: str,
        suffix: str,
        *,
        path: str = "",
        request_id: str = "",
        options: CompletionOptions = CompletionOptions(),
    ) -> Iterator[CompletionChunk]:
        """Stream a completion between ``prefix`` and ``suffix`` (no document needed)."""
        _validate_options(options)
        if options.model and options.model != self.model.name:
            raise InvalidInput(f"this engine serves {self.model.name!r}, not {options.model!r}")
        cancelled = threading.Event()
        if request_id:
            with self._cancel_lock:
                self._cancel_events[request_id] = cancelled
        try:
            yield from self._complete(prefix, suffix, path, request_id, options, cancelled)
        finally:
            if request_id:
                with self._cancel_lock:
                    self._cancel_events.pop(request_id, None)

    def _complete(
        self, prefix: str, suffix: str, path: str, request_id: str, options: CompletionOptions, cancelled: threading.Event
    ) -> Iterator[CompletionChunk]:
        loaded = self.model
        started = time.perf_counter()
        context = CompletionContext(prefix=prefix, suffix=suffix, scope=decide_scope(prefix, suffix, options.scope), max_lines=options.max_lines)
        prompt = build_fim_prompt(loaded.tokenizer, loaded.family, prefix, suffix, path=path, budget=self.budget)
        with self._model_lock:
            for step in decode(loaded, prompt.token_ids, context, options, cancelled):
                timings = Timings(
                    prompt_tokens=len(prompt.token_ids),
                    prefill_ms=step.prefill_ms,
                    decode_ms=step.decode_ms,
                    total_ms=(time.perf_counter() - started) * 1000,
                )
                yield CompletionChunk(
                    request_id=request_id,
                    text=step.text,
                    done=step.finish_reason is not FinishReason.NONE,
                    finish_reason=step.finish_reason,
                    generated_tokens=step.generated_tokens,
                    timings=timings,
                    scope=context.scope,
                    model=loaded.name,
                )


def _validate_options(options: CompletionOptions) -> None:
    if not 1 <= options.max_tokens <= MAX_TOKENS_LIMIT:
        raise InvalidInput(f"max_tokens must be in 1..{MAX_TOKENS_LIMIT}, got {options.max_tokens}")
    if options.temperature < 0:
        raise InvalidInput(f"temperature must be >= 0, got {options.temperature}")
    if not 0 < options.top_p <= 1:
        raise InvalidInput(f"top_p must be in (0, 1], got {options.top_p}")
    if options.max_lines < 1:
        raise InvalidInput(f"max_lines must be >= 1, got {options.max_lines}")


def _path_of(uri: str) -> str:
    """A repository-relative-looking path for the prompt's file header."""
    from urllib.parse import unquote, urlparse

    parsed = urlparse(uri)
    path = unquote(parsed.path) if parsed.scheme else uri
    return path.rsplit("/", 1)[-1] if "/" in path else path
