"""The completion engine: open documents plus a model, completing at a position.

Why one class: it owns the state the gRPC service exposes (documents, the
model and an optional draft model, in-flight requests) and nothing else;
prompt building, decoding (with speculation, ``engine/speculate.py``, or k
suggestions, ``engine/superpose.py``) and post-processing live in their own
modules.

Example::

    engine = CompletionEngine(load_model())
    engine.open_document("file:///a.py", "python", 1, "def add(a, b):\\n    return ")
    for chunk in engine.complete(CompletionRequest("r1", "file:///a.py", Position(1, 11))):
        print(chunk.text)          # grows token by token; the last chunk has done=True
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any, Callable, Iterator

import torch

from cache import kv
from cache.session import CACHE_MODES, DocumentSession, ModelHandle, SessionPolicy, SessionStore
from cache.tokens import CharEdit
from engine.decode import decode, token_distribution
from engine.documents import Document, DocumentStore, line_starts, offset_of
from engine.errors import InvalidInput, ModelUnavailable, StaleVersion
from engine.prompt import PromptBudget, build_fim_prompt, context_header_ids, count_text_tokens, encode_segments, repo_format
from engine.repo_context import ContextChoice, RepoContext
from engine.runtime import LoadedModel
from engine.pass_costs import PassCosts, pass_costs_for
from engine.speculate import (DEFAULT_SPECULATION, SPECULATION_MODES, AcceptanceTally, Combined, DraftModel, DraftPricing,
                              PromptLookup, Proposer, SpeculationSettings)
from engine.stops import CompletionContext, decide_scope
from engine.superpose import NgramModel, superposed_decode
from engine.types import (
    CompletionChunk,
    CompletionOptions,
    CompletionRequest,
    DocumentState,
    FinishReason,
    TextEdit,
    Timings,
)

log = logging.getLogger(__name__)

MAX_TOKENS_LIMIT = 1024
LOOKUP_CHARS = 8000  # text on each side of the cursor that prompt lookup searches
MAX_SUGGESTIONS = 8
SUPERPOSED_NGRAM_WEIGHT = 0.3  # BENCHMARKS.md, bench suggestions
MAINTENANCE_INTERVAL_S = 0.2


class CompletionEngine:
    def __init__(
        self,
        model: LoadedModel | Callable[[], LoadedModel],
        *,
        store: DocumentStore | None = None,
        budget: PromptBudget | None = None,
        policy: SessionPolicy | None = None,
        background: bool = True,
        repo_context: RepoContext | None = None,
        draft_model: LoadedModel | Callable[[], LoadedModel] | None = None,
        speculation: str = DEFAULT_SPECULATION,
        speculation_settings: SpeculationSettings = SpeculationSettings(),
        pass_costs: PassCosts | None = None,
    ) -> None:
        """``pass_costs``: what passes of n rows cost the model here (lookup drafts are sized by it); by
        default measured once per machine and model (``engine.pass_costs``) when lookup first needs it."""
        if speculation not in SPECULATION_MODES:
            raise InvalidInput(f"speculation must be one of {', '.join(SPECULATION_MODES)}, got {speculation!r}")
        if speculation in ("draft", "combined") and draft_model is None:
            raise InvalidInput(f"speculation {speculation!r} needs a draft model")
        self._model = model if isinstance(model, LoadedModel) else None
        self._model_factory = None if isinstance(model, LoadedModel) else model
        self._draft = draft_model if isinstance(draft_model, LoadedModel) else None
        self._draft_factory = None if isinstance(draft_model, LoadedModel) else draft_model
        self.speculation = speculation
        self.speculation_settings = speculation_settings
        self._pass_costs = pass_costs
        self._lookup_tallies = {False: AcceptanceTally(), True: AcceptanceTally()}  # greedy, sampling: how drafts came true
        self.documents = store or DocumentStore()
        self.budget = budget or PromptBudget()
        self.policy = policy or SessionPolicy()
        self.sessions = SessionStore(self.policy)
        self.draft_sessions = SessionStore(self.policy)  # the draft model's rows, kept in step with ``sessions``
        self._draft_handle: ModelHandle | None = None
        self._last_suggestion: dict[str, list[int]] = {}  # uri -> tokens of the last suggestion (a lookup source)
        self._handle: ModelHandle | None = None
        self._model_lock = threading.Lock()  # one forward pass at a time on one model
        self._waiting_requests = 0  # completions waiting for the model: the worker yields to them
        self._load_lock = threading.Lock()
        self._cancel_events: dict[str, threading.Event] = {}
        self._cancel_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._worker: threading.Thread | None = None
        self._background = background
        self.repo_context = repo_context

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

    @property
    def has_draft_model(self) -> bool:
        return self._draft is not None or self._draft_factory is not None

    @property
    def draft_model(self) -> LoadedModel:
        """The drafting model (loaded on first use); it must share the target's tokenizer."""
        if self._draft is None:
            if self._draft_factory is None:
                raise InvalidInput("this engine has no draft model (start it with --draft-model)")
            with self._load_lock:
                if self._draft is None:
                    try:
                        draft = self._draft_factory()
                    except Exception as error:
                        raise ModelUnavailable(f"draft model could not be loaded: {error}") from error
                    if draft.tokenizer.get_vocab() != self.model.tokenizer.get_vocab():
                        raise ModelUnavailable(f"{draft.name} cannot draft for {self.model.name}: their tokenizers differ")
                    self._draft = draft
        return self._draft

    @property
    def handle(self) -> ModelHandle:
        if self._handle is None:
            self._handle = ModelHandle.of(self.model)
        return self._handle

    @property
    def draft_handle(self) -> ModelHandle:
        if self._draft_handle is None:
            self._draft_handle = ModelHandle.of(self.draft_model)
        return self._draft_handle

    def warm_up(self) -> None:
        """Load the model (and the draft model, when speculation uses it) now rather than on the
        first completion; then encode open documents."""
        _ = self.handle
        if self.speculation in ("draft", "combined"):
            _ = self.draft_handle
        if self.speculation == "lookup" and self.speculation_settings.lookup_first_draft is None:
            with self._model_lock:
                self._lookup_pass_costs()
        self._nudge_worker()

    def _lookup_pass_costs(self) -> PassCosts:
        """The model's pass prices on this machine: measured on first use (then read from disk). Call it
        holding the model lock: measuring runs the model."""
        if self._pass_costs is None:
            self._pass_costs = pass_costs_for(self.model)
        return self._pass_costs

    def close(self) -> None:
        """Stop the background worker (tests, shutdown)."""
        self._stopped.set()
        self._wake.set()

    # -- documents ---------------------------------------------------------
    def open_document(self, uri: str, language_id: str, version: int, text: str) -> DocumentState:
        state = self.documents.open(uri, language_id, version, text).state()
        if self.repo_context is not None:
            self.repo_context.note_text(uri, text)
        self._nudge_worker()  # encode the new document's session while the user reads it
        return state

    def edit_document(self, uri: str, version: int, edits: list[TextEdit]) -> DocumentState:
        def forward_to_session(document: Document, offsets: list[tuple[int, int, str]]) -> None:
            # runs under the document store's lock: sessions see batches in order
            char_edits = [CharEdit(start, end, text) for start, end, text in offsets]
            for store in (self.sessions, self.draft_sessions):
                session = store.get(uri, touch=False)
                if session is not None:
                    session.queue_edits(char_edits)
            if self.repo_context is not None:
                self.repo_context.note_text(uri, document.text)  # re-indexed lazily, before the next retrieval

        state = self.documents.edit(uri, version, edits, on_applied=forward_to_session).state()
        self._nudge_worker()  # patch between keystrokes, not at request time
        return state

    def close_document(self, uri: str) -> None:
        self.documents.close(uri)
        self.sessions.pop(uri)
        self.draft_sessions.pop(uri)
        self._last_suggestion.pop(uri, None)
        if self.repo_context is not None:
            self.repo_context.note_text(uri, None)  # the file on disk is the truth again

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
        """Stream a completion at a position of an open document, using its KV session."""
        document = self.documents.get(request.uri)
        if request.version is not None and request.version != document.version:
            raise StaleVersion(
                f"{request.uri}: completion asked for version {request.version}, document is at {document.version}"
            )
        prefix, suffix = document.split_at(request.position)  # validates the position
        _validate_options(request.options)
        mode = request.options.cache_mode or self.policy.mode
        use_context = self._context_wanted(request.options)
        speculation = self._speculation_for(request.options)
        path = self._prompt_path(request.uri)
        with self._request(request.request_id) as cancelled, self._model_for_request():
            prepare_started = time.perf_counter()
            session = self._session_for(request.uri, path)
            if len(session.tokens) > self.policy.max_document_tokens:
                # too long for a whole-document session: a windowed prompt, encoded afresh
                choice = self._choose_context(request.uri, prefix, suffix, None) if use_context else None
                yield from self._complete_locked(prefix, suffix, path, request.request_id, request.options, cancelled,
                                                 budget=self.budget, mode="window", repo=choice, uri=request.uri)
                return
            text = session.tokens.text  # the text the session's cache describes now
            cursor = offset_of(text, line_starts(text), request.position)
            prefix, suffix = text[:cursor], text[cursor:]
            whole_file = (0, text.count("\n") + 1)
            choice = self._choose_context(request.uri, prefix, suffix, whole_file) if use_context else None
            if mode == "recompute":
                # the reference: the same whole-document prompt, encoded from scratch
                yield from self._complete_locked(prefix, suffix, path, request.request_id, request.options, cancelled,
                                                 budget=None, mode=mode, repo=choice, uri=request.uri)
                return
            if choice is not None and choice.should_replace(session.context_keys):
                session.replace_header(self._header_ids(path, choice), mode)
                session.context_keys = choice.included
            elif not use_context and session.context_keys:
                session.replace_header(self._header_ids(path, None), mode)  # this request asked for no context
                session.context_keys = None
            fork, remaining = session.fim_fork(cursor, mode, self.policy.cursor_refresh_window, self.policy.suffix_window,
                                               anchor=self.policy.fim_anchor)
            encoded = kv.length(fork)  # rows now cached for this prompt
            draft_state = None
            if speculation in ("draft", "combined"):
                draft_session = self._draft_session_for(request.uri, session)
                if draft_session is not None:
                    draft_state = draft_session.fim_fork(cursor, mode, self.policy.cursor_refresh_window, self.policy.suffix_window,
                                                         anchor=self.policy.fim_anchor)
            prepare_ms = (time.perf_counter() - prepare_started) * 1000
            yield from self._complete_locked(
                prefix, suffix, path, request.request_id, request.options, cancelled,
                prompt_ids=remaining, cache=fork, mode=mode, prepare_ms=prepare_ms, prompt_tokens=encoded + len(remaining),
                repo=choice, context_chunks=len(session.context_keys or ()), uri=request.uri,
                context_ids=session.header_ids, draft_state=draft_state, speculation=speculation,
            )
            self.sessions.enforce_budget(keep=request.uri)
            self.draft_sessions.enforce_budget(keep=request.uri)

    def complete_text(
        self,
        prefix: str,
        suffix: str,
        *,
        path: str = "",
        uri: str | None = None,
        request_id: str = "",
        options: CompletionOptions = CompletionOptions(),
    ) -> Iterator[CompletionChunk]:
        """Stream a completion between ``prefix`` and ``suffix`` with a windowed prompt (no session).

        With ``uri`` inside the engine's repository, repository context goes in front."""
        _validate_options(options)
        self._speculation_for(options)
        if uri is not None:
            path = path or self._prompt_path(uri)
        with self._request(request_id) as cancelled, self._model_for_request():
            choice = self._choose_context(uri, prefix, suffix, None) if uri is not None and self._context_wanted(options) else None
            yield from self._complete_locked(prefix, suffix, path, request_id, options, cancelled, budget=self.budget,
                                             mode="recompute", repo=choice, uri=uri)

    # -- internals ---------------------------------------------------------
    @contextlib.contextmanager
    def _model_for_request(self) -> Iterator[None]:
        """Hold the model for a request; the background worker sees it waiting and yields."""
        with self._cancel_lock:
            self._waiting_requests += 1
        try:
            self._model_lock.acquire()
        finally:
            with self._cancel_lock:
                self._waiting_requests -= 1
        try:
            yield
        finally:
            self._model_lock.release()

    @contextlib.contextmanager
    def _request(self, request_id: str) -> Iterator[threading.Event]:
        """Register a cancellable request for its lifetime."""
        event = threading.Event()
        if request_id:
            with self._cancel_lock:
                self._cancel_events[request_id] = event
        try:
            yield event
        finally:
            if request_id:
                with self._cancel_lock:
                    self._cancel_events.pop(request_id, None)

    def _prompt_path(self, uri: str) -> str:
        """The file header's path: repository-relative inside the repository, else the file name."""
        if self.repo_context is not None:
            relative = self.repo_context.path_of(uri)
            if relative is not None:
                return relative
        return _path_of(uri)

    def _context_wanted(self, options: CompletionOptions) -> bool:
        """Repository context for this request: the engine has a repository and the request did not opt out."""
        return self.repo_context is not None and options.retrieval is not False

    def _choose_context(self, uri: str, prefix: str, suffix: str, visible_lines: tuple[int, int] | None) -> ContextChoice | None:
        """Repository context for a cursor (caller holds the model lock: the tokenizer is shared)."""
        assert self.repo_context is not None
        tokenizer = self.model.tokenizer
        try:
            return self.repo_context.choose(uri, prefix, suffix, lambda text: count_text_tokens(tokenizer, text), repo_format(self.model.family), visible_lines)
        except Exception:  # context is an aid: a broken index must not fail the completion
            log.exception("retrieval failed for %s", uri)
            return None

    def _header_ids(self, path: str, choice: ContextChoice | None) -> list[int]:
        segments = choice.segments if choice is not None else ()
        return context_header_ids(self.model.tokenizer, self.model.family, segments, path)

    def _session_for(self, uri: str, path: str | None = None) -> DocumentSession:
        """The document's session with every queued edit applied (caller holds the model lock).

        Created under the document store's lock, so no edit falls between the
        text it starts from and the first edit it queues.
        """
        session = self.sessions.get(uri)
        if session is None:
            handle = self.handle
            path = path or self._prompt_path(uri)
            with self.documents.locked():
                document = self.documents.get_unlocked(uri)
                text = document.text
            # first context: names used anywhere in the file (no cursor yet); later requests may move it
            choice = self._choose_context(uri, text, "", (0, text.count("\n") + 1)) if self.repo_context is not None else None
            with self.documents.locked():
                document = self.documents.get_unlocked(uri)
                session = DocumentSession(handle, document.text, self._header_ids(path, choice))
                session.context_keys = choice.included if choice is not None else None
                self.sessions.put(uri, session)
        session.sync(self.policy)
        return session

    def _draft_session_for(self, uri: str, target: DocumentSession) -> DocumentSession | None:
        """The draft model's twin of ``target`` (same text and header), or None when they disagree.

        Both receive the same edits; an edit landing between the two syncs
        leaves them apart for this request, and the draft then sits it out.
        """
        session = self.draft_sessions.get(uri)
        if session is None:
            with self.documents.locked():
                session = DocumentSession(self.draft_handle, self.documents.get_unlocked(uri).text, target.header_ids)
                self.draft_sessions.put(uri, session)
        session.sync(self.policy)
        if session.header_ids != target.header_ids:
            session.replace_header(target.header_ids, self.policy.mode)
        session.context_keys = target.context_keys
        return session if session.tokens.text == target.tokens.text else None

    def _speculation_for(self, options: CompletionOptions) -> str:
        speculation = options.speculation or self.speculation
        if speculation in ("draft", "combined") and not self.has_draft_model:
            raise InvalidInput(f"speculation {speculation!r} needs a draft model; this engine has none (--draft-model)")
        return speculation

    def _ids_around_cursor(self, prefix: str, suffix: str) -> tuple[list[int], list[int]]:
        """Token ids of the last ``LOOKUP_CHARS`` before the cursor and the first after it: what the
        n-gram sources (prompt lookup, the superposed filter) learn from."""
        tokenizer = self.model.tokenizer
        return (tokenizer(prefix[-LOOKUP_CHARS:], add_special_tokens=False).input_ids,
                tokenizer(suffix[:LOOKUP_CHARS], add_special_tokens=False).input_ids)

    def _proposer(
        self, speculation: str, options: CompletionOptions, prefix: str, suffix: str, context_ids: list[int],
        uri: str | None, draft_state: tuple[Any, list[int]] | None, *, keys: int = 0,
    ) -> tuple[Proposer | None, list[int]]:
        """The request's drafter and the token ids of the text before the cursor (what lookup matches on).

        Lookup searches the repository context, the text around the cursor and
        the document's last suggestion, and sizes its drafts by what a pass costs
        at ``keys`` cached rows (the prompt's length) and how its drafts have come
        true so far; the draft model continues from ``draft_state`` (its cache and
        the ids still to feed).
        """
        if speculation == "off":
            return None, []
        settings = self.speculation_settings
        history, ahead = self._ids_around_cursor(prefix, suffix)
        corpus = [context_ids, history, ahead, self._last_suggestion.get(uri, []) if uri is not None else []]

        def lookup(first_draft: int | None, pricing: DraftPricing | None = None) -> PromptLookup:
            return PromptLookup(corpus, max_draft=settings.lookup_max_draft, min_ngram=settings.lookup_min_ngram,
                                first_draft=first_draft, pricing=pricing)

        if speculation == "lookup" or draft_state is None:
            if settings.lookup_first_draft is not None:  # asked for the growing rule
                return lookup(settings.lookup_first_draft), history
            pricing = DraftPricing(self._lookup_pass_costs().relative(keys), self._lookup_tallies[options.temperature > 0])
            return lookup(None, pricing), history
        distribution = None
        generator = None
        if options.temperature > 0:
            distribution = lambda logits: token_distribution(logits, options)  # noqa: E731
            generator = torch.Generator().manual_seed((options.seed or 0) + 1)
        draft = DraftModel(self.draft_model.model, draft_state[0], list(draft_state[1]), max_draft=settings.draft_max,
                           min_confidence=settings.draft_min_confidence, distribution=distribution, generator=generator)
        if speculation == "draft":
            return draft, history
        return Combined(lookup(None), draft, min_lookup=settings.combined_min_lookup), history  # gates on a draft's length

    def _complete_locked(
        self,
        prefix: str,
        suffix: str,
        path: str,
        request_id: str,
        options: CompletionOptions,
        cancelled: threading.Event,
        *,
        budget: PromptBudget | None = None,
        prompt_ids: list[int] | None = None,
        cache: Any = None,
        mode: str,
        prepare_ms: float = 0.0,
        prompt_tokens: int | None = None,
        repo: ContextChoice | None = None,
        context_chunks: int | None = None,
        uri: str | None = None,
        context_ids: list[int] | None = None,
        draft_state: tuple[Any, list[int]] | None = None,
        speculation: str | None = None,
    ) -> Iterator[CompletionChunk]:
        """Decode one completion; without ``prompt_ids`` the prompt is built (and encoded) here.

        ``draft_state``: the draft model's cache and pending ids for this prompt
        (a session fork); without it a draft model encodes the prompt itself."""
        loaded = self.model
        if options.model and options.model != loaded.name:
            raise InvalidInput(f"this engine serves {loaded.name!r}, not {options.model!r}")
        started = time.perf_counter() - prepare_ms / 1000
        context = CompletionContext(prefix=prefix, suffix=suffix, scope=decide_scope(prefix, suffix, options.scope), max_lines=options.max_lines)
        if prompt_ids is None:
            prompt = build_fim_prompt(loaded.tokenizer, loaded.family, prefix, suffix, path=path, budget=budget)
            prompt_ids = prompt.token_ids
            prefix, suffix = prompt.prefix, prompt.suffix  # what the prompt holds after the budget cut
            context_ids = encode_segments(loaded.tokenizer, repo.segments) if repo is not None else []
            prompt_ids = context_ids + prompt_ids
            context_chunks = len(repo.included) if repo is not None else 0
        speculation = speculation or self._speculation_for(options)
        if speculation in ("draft", "combined") and draft_state is None:
            if cache is None:  # a prompt encoded from scratch: the draft model encodes it too
                draft_state = (kv.new_cache(self.draft_model.model.config), list(prompt_ids))
            else:  # a session fork without a draft twin: the draft sits this one out
                speculation = "lookup" if speculation == "combined" else "off"
        total_prompt = prompt_tokens if prompt_tokens is not None else len(prompt_ids)
        if options.suggestions > 1:
            yield self._alternatives_locked(prompt_ids, context, options, cache, context_ids or [], prefix, suffix,
                                            request_id, mode, started, prepare_ms, total_prompt, repo, context_chunks, cancelled)
            return
        proposer, history = self._proposer(speculation, options, prefix, suffix, context_ids or [], uri, draft_state,
                                           keys=total_prompt)
        for step in decode(loaded, prompt_ids, context, options, cancelled, cache=cache, proposer=proposer, history=history):
            timings = Timings(
                prompt_tokens=total_prompt,
                prefill_ms=step.prefill_ms,
                decode_ms=step.decode_ms,
                total_ms=(time.perf_counter() - started) * 1000,
                prepare_ms=prepare_ms,
                encoded_tokens=len(prompt_ids),
                retrieval_ms=repo.elapsed_ms if repo is not None else 0.0,
                context_chunks=context_chunks or 0,
                target_passes=step.target_forwards + 1,
                drafted_tokens=step.drafted_tokens,
                accepted_tokens=step.accepted_tokens,
            )
            done = step.finish_reason is not FinishReason.NONE
            if done and uri is not None and step.token_ids:
                self._last_suggestion[uri] = list(step.token_ids)
            yield CompletionChunk(
                request_id=request_id,
                text=step.text,
                done=done,
                finish_reason=step.finish_reason,
                generated_tokens=step.generated_tokens,
                timings=timings,
                scope=context.scope,
                model=loaded.name,
                cache_mode=mode,
                speculation=speculation,
            )

    def _alternatives_locked(
        self, prompt_ids: list[int], context: CompletionContext, options: CompletionOptions, cache: Any,
        context_ids: list[int], prefix: str, suffix: str, request_id: str, mode: str, started: float,
        prepare_ms: float, total_prompt: int, repo: ContextChoice | None, context_chunks: int | None,
        cancelled: threading.Event,
    ) -> CompletionChunk:
        """k suggestions by superposed decoding, as one final chunk (``text`` best, then ``alternatives``).

        The n-gram filter learns from the repository context and the text around the cursor."""
        loaded = self.model
        corpus = [context_ids, *self._ids_around_cursor(prefix, suffix)]
        result = superposed_decode(loaded, prompt_ids, context, options.suggestions, options.max_tokens, cache=cache,
                                   ngrams=NgramModel(corpus), ngram_weight=SUPERPOSED_NGRAM_WEIGHT, cancelled=cancelled)
        texts = [s.text for s in result.suggestions] or [""]
        best = result.suggestions[0] if result.suggestions else None
        timings = Timings(
            prompt_tokens=total_prompt, prefill_ms=result.prefill_ms, decode_ms=result.decode_ms,
            total_ms=(time.perf_counter() - started) * 1000, prepare_ms=prepare_ms, encoded_tokens=len(prompt_ids),
            retrieval_ms=repo.elapsed_ms if repo is not None else 0.0, context_chunks=context_chunks or 0,
            target_passes=result.passes + 1,
        )
        return CompletionChunk(
            request_id=request_id, text=texts[0], done=True,
            finish_reason=FinishReason.CANCELLED if cancelled.is_set() else best.finish_reason if best is not None else FinishReason.MAX_TOKENS,
            generated_tokens=len(best.token_ids) if best is not None else 0, timings=timings, scope=context.scope,
            model=loaded.name, cache_mode=mode, speculation="off", alternatives=tuple(texts[1:]),
        )

    # -- background maintenance -------------------------------------------
    def _nudge_worker(self) -> None:
        if not self._background or self._model is None:
            return  # nothing to maintain before the model is loaded
        if self._worker is None:
            with self._load_lock:
                if self._worker is None:
                    self._worker = threading.Thread(target=self._maintain, name="livefim-kv-maintenance", daemon=True)
                    self._worker.start()
        self._wake.set()

    def _next_chore(self) -> Callable[[], Any] | None:
        """The most urgent bounded piece of cache work, or None when all is done.

        The target model's sessions first; then the draft model's twins (when
        speculation drafts with a model), with the same chores."""
        policy = self.policy
        items = self.sessions.items()
        for _, session in items:
            if session.has_queued_edits:
                return lambda: session.sync(policy)
        for uri in self.documents.uris():
            if self.sessions.get(uri, touch=False) is None:
                return lambda: self._session_for(uri)
        chore = _encoding_chore(items, policy)
        if chore is not None or self._draft is None:
            return chore
        drafts = self.draft_sessions.items()
        for _, session in drafts:
            if session.has_queued_edits:
                return lambda: session.sync(policy)
        if self.speculation in ("draft", "combined"):
            for uri, target in items:
                if self.draft_sessions.get(uri, touch=False) is None and not target.has_queued_edits:
                    return lambda: self._draft_session_for(uri, target)
        return _encoding_chore(drafts, policy)

    def _maintain(self) -> None:
        """Patch queued edits, encode new documents and refresh stale rows while the model is idle.

        Each step holds the model lock for one bounded piece of work (one edit
        batch, or ``refresh_chunk`` rows) and never waits for it: a completion
        gets the model within one step.
        """
        while not self._stopped.is_set():
            self._wake.wait(MAINTENANCE_INTERVAL_S)  # woken by edits, else a periodic look for idle refreshes
            self._wake.clear()
            while not self._stopped.is_set() and not self._waiting_requests:
                if not self._model_lock.acquire(blocking=False):
                    break  # a completion is running; look again later
                try:
                    chore = self._next_chore()
                    if chore is None:
                        break
                    try:
                        chore()
                    except Exception:  # a document closed meanwhile, etc.: never kill the worker
                        log.exception("background cache step failed")
                    self.sessions.enforce_budget()
                finally:
                    self._model_lock.release()
                time.sleep(0)  # let a waiting completion take the lock


def _encoding_chore(items: list[tuple[str, DocumentSession]], policy: SessionPolicy) -> Callable[[], Any] | None:
    """Encode a chunk of a new session's rows, else refresh a chunk of stale ones."""
    for _, session in items:
        if not session.fully_encoded and len(session.tokens) <= policy.max_document_tokens:
            return lambda: session.ensure_encoded(policy.refresh_chunk)
    for _, session in items:
        if session.refresh_due(policy):
            return lambda: session.refresh(policy.refresh_chunk)
    return None


def _validate_options(options: CompletionOptions) -> None:
    if not 1 <= options.max_tokens <= MAX_TOKENS_LIMIT:
        raise InvalidInput(f"max_tokens must be in 1..{MAX_TOKENS_LIMIT}, got {options.max_tokens}")
    if options.temperature < 0:
        raise InvalidInput(f"temperature must be >= 0, got {options.temperature}")
    if not 0 < options.top_p <= 1:
        raise InvalidInput(f"top_p must be in (0, 1], got {options.top_p}")
    if options.max_lines < 1:
        raise InvalidInput(f"max_lines must be >= 1, got {options.max_lines}")
    if not 1 <= options.suggestions <= MAX_SUGGESTIONS:
        raise InvalidInput(f"suggestions must be in 1..{MAX_SUGGESTIONS}, got {options.suggestions}")
    if options.speculation is not None and options.speculation not in SPECULATION_MODES:
        raise InvalidInput(f"speculation must be one of {', '.join(SPECULATION_MODES)}, got {options.speculation!r}")
    if options.cache_mode is not None and options.cache_mode not in CACHE_MODES:
        raise InvalidInput(f"cache_mode must be one of {', '.join(CACHE_MODES)}, got {options.cache_mode!r}")


def _path_of(uri: str) -> str:
    """A repository-relative-looking path for the prompt's file header."""
    from urllib.parse import unquote, urlparse

    parsed = urlparse(uri)
    path = unquote(parsed.path) if parsed.scheme else uri
    return path.rsplit("/", 1)[-1] if "/" in path else path
