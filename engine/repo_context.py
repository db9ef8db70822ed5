"""Cross-file context for the engine: which repository chunks go in front of a document.

Why a separate object: the engine knows documents and KV sessions, the
``context`` package knows repositories; this joins them. It keeps the index in
step with the editor's buffers (edits of indexed files are re-parsed lazily,
before the next retrieval) and turns a cursor into the stable leading segments
of a repo-level prompt (``<|repo_name|>``, one ``<|file_sep|>`` block per file).

Why "sticky" context: the context sits in front of the document, so changing
it touches every cached row after it. A session keeps its context while the
chunks retrieval ranks best for the cursor are already in it, and takes the new
context only when they are not (``ContextChoice.should_replace``).

Example::

    context = RepoContext(build_index(Path("~/src/app").expanduser()))
    choice = context.choose("file:///home/me/src/app/main.py", prefix, suffix, count_tokens, markers)
    choice.segments  # repo line and context files, sorted by path: stable across requests
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from context.assemble import ContextBudget, CountTokens, RepoFormat, Segment, assemble_repo_prompt
from context.index import RepoIndex
from context.retrieve import RetrievalOptions, RetrievedChunk, retrieve

ChunkKey = tuple[str, int, int]  # path, start line, end line


@dataclass(frozen=True)
class ContextChoice:
    """The context retrieved for one cursor, as prompt segments and the chunks they hold."""

    segments: tuple[Segment, ...]  # stable leading segments (empty: no context)
    included: frozenset[ChunkKey]
    best: tuple[ChunkKey, ...]  # the top-ranked chunks that fit, best first
    skipped: bool  # retrieval judged the local context sufficient
    elapsed_ms: float

    def should_replace(self, current: frozenset[ChunkKey] | None, keep_top: int = 2) -> bool:
        """Whether a session holding ``current`` should switch to this context.

        >>> new = ContextChoice((), frozenset({("a.py", 0, 9)}), (("a.py", 0, 9),), False, 1.0)
        >>> new.should_replace(frozenset({("a.py", 0, 9), ("b.py", 3, 8)})), new.should_replace(frozenset())
        (False, True)
        """
        if current is None:
            return True
        return not set(self.best[:keep_top]) <= current


@dataclass
class RepoContext:
    """One repository's index plus what the engine needs to use it."""

    index: RepoIndex
    budget: ContextBudget = ContextBudget()
    options: RetrievalOptions = RetrievalOptions()
    # The skip signal is measured, not obeyed: on cross-file tasks it fired on 11.5% and
    # would have dropped the defining chunk in 78% of those (BENCHMARKS.md).
    honor_skip: bool = False
    order: str = "path"  # context files by path, or "score": the best file last (context.assemble)
    _dirty: dict[str, str | None] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def path_of(self, uri: str) -> str | None:
        """The repository-relative path of a document, or None when it lies outside."""
        return self.index.relative(uri)

    def note_text(self, uri: str, text: str | None) -> None:
        """The editor's buffer for ``uri`` changed (None: closed and unsaved changes dropped)."""
        path = self.path_of(uri)
        if path is None:
            return
        with self._lock:
            self._dirty[path] = text

    def flush(self) -> int:
        """Re-index the buffers noted since the last flush; returns how many files changed."""
        with self._lock:
            dirty, self._dirty = self._dirty, {}
        changed = 0
        for path, text in dirty.items():
            if text is None:
                disk = self.index.root / path
                text = disk.read_text(encoding="utf-8", errors="replace") if disk.is_file() else None
            changed += self.index.update_file(path, text)
        return changed

    def choose(
        self,
        uri: str,
        prefix: str,
        suffix: str,
        count_tokens: CountTokens,
        markers: RepoFormat,
        visible_lines: tuple[int, int] | None = None,
    ) -> ContextChoice | None:
        """Context for a cursor between ``prefix`` and ``suffix``; None when the document is not in the repository."""
        path = self.path_of(uri)
        if path is None:
            return None
        self.flush()
        result = retrieve(self.index, path, prefix, suffix, self.options, visible_lines)
        if (result.skip and self.honor_skip) or not result.chunks:
            return ContextChoice((), frozenset(), (), result.skip, result.elapsed_ms)
        context_only = ContextBudget(self.budget.max_context_tokens, 0, 0, self.budget.max_outline_tokens,
                                     self.budget.max_chunk_tokens)
        prompt = assemble_repo_prompt(result.chunks, path, "", "", count_tokens, context_only,
                                      repo_name=self.index.name, markers=markers, order=self.order,
                                      outline=result.outline)
        # A chunk that entered as its head counts as that chunk.
        whole = {(c.path, c.start_line, c.chunk_id): c for c in result.chunks}
        included = frozenset(_key(whole.get((c.path, c.start_line, c.chunk_id), c)) for c in prompt.included)
        included |= frozenset(_key(c) for c in prompt.outlined)
        best = tuple(_key(c) for c in sorted(result.chunks, key=lambda c: -c.score) if _key(c) in included)
        return ContextChoice(prompt.segments[: prompt.stable_segments], included, best, False, result.elapsed_ms)


def open_repo_context(root: Path, progress=None, budget: ContextBudget = ContextBudget()) -> RepoContext:
    """Load the stored index of ``root`` (brought up to date with the disk) or build and store one."""
    from context.store import DiskStore, load_or_build

    index, _ = load_or_build(Path(root), DiskStore(), progress=progress)
    return RepoContext(index, budget)


def _key(chunk: RetrievedChunk) -> ChunkKey:
    return (chunk.path, chunk.start_line, chunk.end_line)
