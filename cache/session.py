"""Per-document sessions: token ids and a KV cache kept in step with the text.

Why: completing in a 4k-token file must not re-encode the file after every
keystroke. A session holds the document's tokens (``TokenizedText``) and the
model's KV rows for ``header + tokens``; edits patch both (``cache.pie``).

Cache modes (per engine, and per request for comparison and A/B tests):

* ``recompute`` — no reuse: encode the whole FIM prompt for every completion.
* ``prefix`` — reuse rows up to the first change, re-encode the rest (what
  vLLM/SGLang prefix caching gives). Exact.
* ``pie`` — patch on every edit: encode only new tokens and re-rotate moved
  rows. Approximate beyond layer 0; stale rows are refreshed when their number
  passes a budget or when the document is idle (``refresh``).

A completion forks the session's cache (no copy: tensors are shared and never
written in place), splices ``<|fim_suffix|>`` in at the cursor and decodes on
the fork; the session itself is unchanged.
"""

from __future__ import annotations

import copy
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal, Sequence

from cache import kv
from cache.fim import fim_split_patch
from cache.pie import PatchStats, apply_patch, reencode_from
from cache.tokens import (
    CharEdit,
    KeptRun,
    NewRun,
    TokenizedText,
    TokenPatch,
    compose,
    identity,
    invert,
    trimmed,
    truncate_fresh,
)

CacheMode = Literal["recompute", "prefix", "pie"]
CACHE_MODES: tuple[str, ...] = ("recompute", "prefix", "pie")


@dataclass(frozen=True)
class SessionPolicy:
    """How sessions keep their caches; defaults are justified in BENCHMARKS.md."""

    mode: CacheMode = "pie"
    refresh_window: int = 0  # rows re-encoded right after each change when edits are patched (pie)
    cursor_refresh_window: int = 128  # suffix rows re-encoded after <|fim_suffix|> per completion (pie)
    suffix_window: int | None = None  # pie: keep only this many suffix tokens, all re-encoded (None: whole suffix)
    stale_budget: int = 256  # changed tokens (new + removed) tolerated before stale rows are refreshed
    idle_refresh_seconds: float = 2.0  # refresh stale rows after this long without edits
    refresh_chunk: int = 64  # rows per background step (bounds how long a completion waits)
    fim_anchor: bool = False  # pie: keep <|fim_suffix|> in the session at the cursor (see DocumentSession)
    max_document_tokens: int = 8192  # larger documents use the windowed prompt, no session
    memory_budget_bytes: int = 4 << 30  # KV bytes across all sessions (LRU eviction)


@dataclass(frozen=True)
class ModelHandle:
    """What a session needs of the model: forward, tokenizer and FIM token ids."""

    model: Any
    tokenizer: Any
    rope: kv.RopeSpec
    fim_suffix_id: int
    fim_middle_id: int

    @classmethod
    def of(cls, loaded: Any) -> "ModelHandle":
        """The handle of a loaded model (anything with ``model``, ``tokenizer`` and a ``family``
        naming its FIM tokens, such as ``engine.runtime.LoadedModel``)."""
        tokenizer, family = loaded.tokenizer, loaded.family
        return cls(
            model=loaded.model,
            tokenizer=tokenizer,
            rope=kv.rope_spec(loaded.model),
            fim_suffix_id=tokenizer.convert_tokens_to_ids(family.fim_suffix_token),
            fim_middle_id=tokenizer.convert_tokens_to_ids(family.fim_middle_token),
        )


class DocumentSession:
    """A document's tokens and KV rows. The rows may lag the text by one pending patch.

    ``cache_ids`` are the tokens the rows describe (``header + cache_ids[:encoded_rows]``);
    ``pending`` turns ``cache_ids`` into ``tokens.ids``. Edits only extend
    ``pending`` (cheap: a window re-tokenization); ``sync`` patches the rows,
    off the request path; a completion composes ``pending`` with the cursor's
    FIM split and encodes both in one pass.
    """

    def __init__(self, handle: ModelHandle, text: str, header_ids: Sequence[int]) -> None:
        self.handle = handle
        self.header_ids = list(header_ids)
        self.tokens = TokenizedText(handle.tokenizer, text)
        self.cache: Any | None = None  # rows: header + cache_ids[:encoded_rows]
        self.cache_ids: list[int] = self.tokens.ids
        self.pending: TokenPatch | None = None  # cache_ids -> tokens.ids
        self.encoded_rows = 0
        self.stale_from: int | None = None  # first stale row (PIE), None when exact
        self.last_edit = time.monotonic()
        self.changed_tokens = 0  # new + removed tokens since the rows were last exact
        self.context_keys: frozenset | None = None  # repository chunks in the header (engine's business)
        self.anchor: int | None = None  # anchored sessions: offset in the text where <|fim_suffix|> sits
        self._queued: list[CharEdit] = []
        self._queue_lock = threading.Lock()

    # -- state -------------------------------------------------------------
    @property
    def bytes(self) -> int:
        return 0 if self.cache is None else kv.bytes_of(self.cache)

    @property
    def fully_encoded(self) -> bool:
        return self.cache is not None and self.pending is None and self.encoded_rows == len(self.cache_ids)

    def clone(self) -> "DocumentSession":
        """An independent session over the same rows (tensors shared, never written in place)."""
        twin = DocumentSession.__new__(DocumentSession)
        twin.__dict__.update(self.__dict__)
        twin.tokens = copy.copy(self.tokens)
        twin.tokens.ids, twin.tokens.starts = list(self.tokens.ids), list(self.tokens.starts)
        if self.cache is not None:
            twin.cache = kv.from_snapshot(self.handle.model.config, kv.snapshot(self.cache))
        twin._queued, twin._queue_lock = list(self._queued), threading.Lock()
        return twin

    def drop_cache(self) -> None:
        """Free the KV rows (eviction); the next use re-encodes."""
        self.cache, self.encoded_rows, self.stale_from = None, 0, None
        self.cache_ids, self.pending, self.changed_tokens, self.anchor = self.tokens.ids, None, 0, None

    # -- edits -------------------------------------------------------------
    def queue_edits(self, edits: list[CharEdit]) -> None:
        """Record an applied edit batch (called under the document store's lock: no work here)."""
        with self._queue_lock:
            self._queued.extend(edits)
        self.last_edit = time.monotonic()

    @property
    def has_queued_edits(self) -> bool:
        return bool(self._queued) or self.pending is not None

    def absorb_queued(self) -> None:
        """Re-tokenize around queued edits and fold them into ``pending`` (no model work)."""
        with self._queue_lock:
            edits, self._queued = self._queued, []
        if edits:
            self.record_edits(edits)

    def record_edits(self, edits: list[CharEdit]) -> TokenPatch:
        if self.anchor is not None and self.cache is not None:
            # anchored: <|fim_suffix|> leaves its old place and follows the typing (end of the last edit)
            unsplit, old_target = self._unsplit()
            edit = self.tokens.edit(edits)
            if edits:
                self.anchor = edits[-1].start + len(edits[-1].text)
            patch = trimmed(compose(compose(unsplit, edit), self._split_at(self.anchor)), old_target)
        else:
            patch = self.tokens.edit(edits)
            self.anchor = None
        if self.cache is None:
            self.cache_ids = self.tokens.ids
        elif not patch.is_noop or self.pending is not None:
            self.pending = patch if self.pending is None else compose(self.pending, patch)
            if self.pending.is_noop:
                self.pending = None
        self.last_edit = time.monotonic()
        return patch

    def sync(self, policy: SessionPolicy) -> PatchStats | None:
        """Bring the rows up to the text: PIE patch, or crop to the first change (prefix)."""
        self.absorb_queued()
        patch, self.pending = self.pending, None
        old_ids = self.cache_ids
        if patch is None or self.cache is None:
            self.cache_ids = self._target_ids()
            return None
        self.cache_ids = patch.apply(old_ids)
        if policy.mode != "pie" or self.encoded_rows != len(old_ids):
            keep = min(self.encoded_rows, patch.first_change)
            kv.crop_to(self.cache, len(self.header_ids) + keep)
            self.encoded_rows = keep
            if self.stale_from is not None and self.stale_from >= keep:
                self.stale_from = None
            return None
        return self._patch_rows(patch, old_ids, policy.refresh_window)

    def _patch_rows(self, patch: TokenPatch, old_ids: list[int], refresh_window: int) -> PatchStats:
        """PIE-patch the session's own rows from ``old_ids`` to ``self.cache_ids`` (set by the caller)."""
        kept = patch.new_length - patch.new_token_count
        self.changed_tokens += patch.new_token_count + (patch.old_length - kept)
        first_change = patch.first_change
        stats = apply_patch(
            self.handle.model, self.cache, patch, old_ids, self.handle.rope,
            header_rows=len(self.header_ids), mode="pie", refresh_window=refresh_window,
        )
        self.encoded_rows = len(self.cache_ids)
        earlier = self.stale_from if self.stale_from is not None and self.stale_from < first_change else None
        candidates = [row for row in (earlier, stats.first_stale_row) if row is not None]
        self.stale_from = min(candidates) if candidates else None
        if self.stale_from is None:
            self.changed_tokens = 0
        return stats

    # -- the <|fim_suffix|> anchor -----------------------------------------
    def _split_at(self, offset: int) -> TokenPatch:
        """Document ids -> ``tok(text[:offset]) + [FS] + tok(text[offset:])``."""
        return fim_split_patch(self.tokens, offset, self.handle.fim_suffix_id)

    def _target_ids(self) -> list[int]:
        """The ids the rows should describe once pending work is done: the document, with
        ``<|fim_suffix|>`` at the anchor when there is one."""
        return self.tokens.ids if self.anchor is None else self._split_at(self.anchor).apply(self.tokens.ids)

    def _unsplit(self) -> tuple[TokenPatch, list[int]]:
        """For an anchored session: the patch taking the marker out (target ids -> document
        ids), and the target ids it starts from."""
        assert self.anchor is not None
        split = self._split_at(self.anchor)
        return invert(split, self.tokens.ids), split.apply(self.tokens.ids)

    def _to_cursor(self, cursor: int) -> TokenPatch:
        """Target ids -> the FIM split at ``cursor`` (moving the anchor, or splicing it in)."""
        if self.anchor is None:
            return self._split_at(cursor)
        unsplit, old_target = self._unsplit()
        if self.anchor == cursor:
            return identity(len(old_target))
        return trimmed(compose(unsplit, self._split_at(cursor)), old_target)

    def apply_edits(self, edits: list[CharEdit], policy: SessionPolicy) -> PatchStats | None:
        """Record and patch at once (what the background worker does, edit by edit)."""
        self.record_edits(edits)
        return self.sync(policy)

    def replace_header(self, header_ids: Sequence[int], mode: CacheMode) -> int:
        """Put a new header (repository context) in front of the document; returns tokens encoded.

        The header's changed tail is an edit at the start of the prompt. ``pie``
        patches it like any edit (new header rows encoded, document rows
        re-rotated and marked stale, refreshed later); other modes drop the rows
        from the first changed header token and re-encode the document lazily.
        """
        new_header = list(header_ids)
        old_header = self.header_ids
        if new_header == old_header:
            return 0
        self.header_ids = new_header
        if self.cache is None:
            return 0
        common = 0
        while common < min(len(old_header), len(new_header)) and old_header[common] == new_header[common]:
            common += 1
        model = self.handle.model
        fresh = new_header[common:]
        if mode == "pie" and self.pending is None and self.encoded_rows == len(self.cache_ids):
            runs = [r for r in (KeptRun(0, common), NewRun(fresh), KeptRun(len(old_header), len(old_header) + len(self.cache_ids))) if len(r)]
            patch = TokenPatch(len(old_header) + len(self.cache_ids), runs)
            apply_patch(model, self.cache, patch, old_header + self.cache_ids, self.handle.rope, header_rows=0, mode="pie")
            if self.cache_ids:
                self.stale_from = 0
                self.changed_tokens += len(fresh) + len(old_header) - common
            return len(fresh)
        kv.crop_to(self.cache, min(common, kv.length(self.cache)))
        if fresh:
            kv.encode_chunked(model, self.cache, fresh)
        self.encoded_rows, self.stale_from, self.changed_tokens = 0, None, 0
        if self.pending is not None:
            self.cache_ids, self.pending = self._target_ids(), None
        return len(fresh)

    # -- encoding ----------------------------------------------------------
    def ensure_encoded(self, max_rows: int | None = None) -> int:
        """Encode missing rows of ``cache_ids`` (new session, eviction, prefix mode), at most
        ``max_rows`` of them (a background step). Returns tokens encoded."""
        model = self.handle.model
        if self.cache is None:
            self.cache = kv.new_cache(model.config)
            kv.encode_chunked(model, self.cache, self.header_ids)
            self.encoded_rows, self.cache_ids, self.pending, self.anchor = 0, self.tokens.ids, None, None
        end = len(self.cache_ids) if max_rows is None else min(len(self.cache_ids), self.encoded_rows + max_rows)
        missing = self.cache_ids[self.encoded_rows : end]
        if missing:
            kv.encode_chunked(model, self.cache, missing)
        self.encoded_rows = end
        return len(missing)

    def refresh(self, max_rows: int | None = None) -> int:
        """Re-encode stale rows exactly, oldest first; ``max_rows`` bounds one step."""
        if self.cache is None or self.stale_from is None:
            return 0
        start = self.stale_from
        end = self.encoded_rows if max_rows is None else min(self.encoded_rows, start + max_rows)
        reencode_from(self.handle.model, self.cache, self.cache_ids, start, header_rows=len(self.header_ids), end=end)
        self.stale_from = None if end >= self.encoded_rows else end
        if self.stale_from is None:
            self.changed_tokens = 0
        return end - start

    def refresh_due(self, policy: SessionPolicy, now: float | None = None) -> bool:
        if self.stale_from is None:
            return False
        idle = (now or time.monotonic()) - self.last_edit >= policy.idle_refresh_seconds
        return self.changed_tokens > policy.stale_budget or idle

    # -- completion --------------------------------------------------------
    def fim_fork(
        self, cursor: int, mode: CacheMode, refresh_window: int = 0, suffix_window: int | None = None,
        anchor: bool = False,
    ) -> tuple[Any, list[int]]:
        """A cache holding ``header + prefix + <|fim_suffix|> + suffix`` for a cursor
        (code-point offset of the current text), and the ids still to feed
        (``<|fim_middle|>``). Pending edits and the split cost one pass together.
        ``refresh_window`` (pie): also re-encode that many rows after each change,
        so the suffix right after the cursor sees ``<|fim_suffix|>``.
        ``suffix_window`` (pie): instead, keep only that many suffix tokens, all
        encoded afresh after the marker (the far suffix is left out).
        ``anchor`` (pie): patch the session itself, not just the fork, so that
        ``<|fim_suffix|>`` stays in its rows at the cursor and follows later
        typing: suffix rows then see the marker, a refresh makes them exact,
        and the next request at the same place encodes nothing."""
        assert mode in ("prefix", "pie"), mode
        self.absorb_queued()
        split = self._to_cursor(cursor)
        header = len(self.header_ids)
        if self.cache is None:
            self.ensure_encoded(max_rows=0)  # header only; rows follow below
        patch = split if self.pending is None else compose(self.pending, split)
        # rows worth having in the session itself: all (pie re-rotates them), or those before the first change
        wanted = len(self.cache_ids) if mode == "pie" else min(len(self.cache_ids), patch.first_change)
        if self.encoded_rows < wanted:
            self.ensure_encoded(max_rows=wanted - self.encoded_rows)
        if mode == "pie" and anchor and suffix_window is None:
            old_ids, self.pending = self.cache_ids, None
            self.cache_ids, self.anchor = patch.apply(old_ids), cursor
            if not patch.is_noop:
                self._patch_rows(patch, old_ids, refresh_window)
            return kv.from_snapshot(self.handle.model.config, kv.snapshot(self.cache)), [self.handle.fim_middle_id]
        fork = kv.from_snapshot(self.handle.model.config, kv.snapshot(self.cache))
        if mode == "pie" and suffix_window is not None:
            final_marker = patch.apply(self.cache_ids).index(self.handle.fim_suffix_id)
            patch = truncate_fresh(patch, self.cache_ids, final_marker + 1, suffix_window)
        if mode == "pie":
            apply_patch(
                self.handle.model, fork, patch, self.cache_ids, self.handle.rope,
                header_rows=header, mode="pie", refresh_window=refresh_window,
            )
            return fork, [self.handle.fim_middle_id]
        # prefix: exact rows up to the first change (an edit's, or the cursor's), the rest afresh
        exact_rows = min(self.encoded_rows, patch.first_change, self.stale_from if self.stale_from is not None else self.encoded_rows)
        kv.crop_to(fork, header + exact_rows)
        kv.encode_chunked(self.handle.model, fork, patch.apply(self.cache_ids)[exact_rows:])
        return fork, [self.handle.fim_middle_id]


class SessionStore:
    """Sessions by URI with an LRU over KV bytes: over budget, the least recently used lose their cache."""

    def __init__(self, policy: SessionPolicy) -> None:
        self.policy = policy
        self._sessions: OrderedDict[str, DocumentSession] = OrderedDict()
        self.lock = threading.RLock()
        self.evictions = 0

    def get(self, uri: str, touch: bool = True) -> DocumentSession | None:
        """The session, marked most recently used unless ``touch`` is False."""
        with self.lock:
            session = self._sessions.get(uri)
            if session is not None and touch:
                self._sessions.move_to_end(uri)
            return session

    def items(self) -> list[tuple[str, DocumentSession]]:
        with self.lock:
            return list(self._sessions.items())

    def put(self, uri: str, session: DocumentSession) -> None:
        with self.lock:
            self._sessions[uri] = session
            self._sessions.move_to_end(uri)

    def pop(self, uri: str) -> DocumentSession | None:
        with self.lock:
            return self._sessions.pop(uri, None)

    def total_bytes(self) -> int:
        with self.lock:
            return sum(s.bytes for s in self._sessions.values())

    def enforce_budget(self, keep: str | None = None) -> int:
        """Drop caches of least recently used sessions until under budget; returns how many."""
        dropped = 0
        with self.lock:
            total = self.total_bytes()
            for uri, session in list(self._sessions.items()):
                if total <= self.policy.memory_budget_bytes:
                    break
                if uri != keep and session.cache is not None:
                    total -= session.bytes
                    session.drop_cache()
                    dropped += 1
            self.evictions += dropped
        return dropped
