"""Fit retrieved chunks, prefix and suffix into a token budget, in the repo-level FIM format.

Why segments, not a string: control markers (``<|file_sep|>``) must become single
special tokens while user text must never be read as one (a file may contain the
literal text ``<|file_sep|>``). The engine tokenizes each ``Segment`` by its kind.

Why this order: the prompt is ``repo name, context files, current file``. Context
files are sorted by path and their chunks by line, so two requests that retrieve
the same chunks produce byte-identical leading segments whose KV the engine can
reuse (``RepoPrompt.stable_segments`` says how many). The current file comes last
because it changes on every keystroke.

Budget: chunks are taken greedily in score order while the context segments
(repo line, every ``<|file_sep|>path\\n...`` block) fit ``max_context_tokens``; a
control marker costs 1 token, text costs ``count_tokens(text)``. Prefix and
suffix are cut on line boundaries to their own budgets (the prefix keeps its
last lines, the suffix its first). Chunks of one file that are not adjacent are
separated by an elision line in the file's comment syntax (``# ...``). A chunk
that no longer fits whole enters as its head (its first lines, at most
``max_chunk_tokens``: decorators, signature, docstring) with an elision line for
the rest, if that fits: whole 60-line chunks of the best names otherwise crowd out
the definitions of the next ones (BENCHMARKS.md).

Module outlines (``outline``: signature lines from ``context.outline``) come
after the chunks, likeliest first, in a budget of their own
(``max_outline_tokens``, on top of the chunks' budget, so they never push a
chunk out); a signature inside a chosen chunk is left out. They join their
file's block like chunks, each with an elision line for its body.

Example (a word counter stands in for the tokenizer)::

    >>> words = lambda text: len(text.split())
    >>> chunks = [RetrievedChunk("geo/shapes.py", 0, 2, "class Circle:\\n    r: float", 1.0, "definition:Circle")]
    >>> prompt = assemble_repo_prompt(chunks, "app.py", "c = ", "\\n", words, ContextBudget(20, 10, 10), repo_name="demo")
    >>> prompt.render()
    '<|repo_name|>demo\\n<|file_sep|>geo/shapes.py\\nclass Circle:\\n    r: float\\n<|file_sep|>app.py\\n<|fim_prefix|>c = <|fim_suffix|>\\n<|fim_middle|>'
    >>> prompt.context_tokens, prompt.stable_segments  # (1 + 1 "demo") + (1 + 5 words of the file block)
    (8, 4)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from context.languages import language_for_path
from context.retrieve import RetrievedChunk

CountTokens = Callable[[str], int]
CONTROL = "control"
TEXT = "text"


@dataclass(frozen=True)
class ContextBudget:
    """Token budgets of the three parts of a repo-level prompt."""

    max_context_tokens: int = 1024
    max_prefix_tokens: int = 1536
    max_suffix_tokens: int = 512
    max_outline_tokens: int = 256  # signature lines (context.outline), on top of the chunks' budget
    max_chunk_tokens: int | None = 128  # a chunk that does not fit whole may enter as its first lines, up to this


@dataclass(frozen=True)
class RepoFormat:
    """The model's markers (Qwen2.5-Coder by default; the engine may build one from its registry)."""

    repo_name: str = "<|repo_name|>"
    file_sep: str = "<|file_sep|>"
    fim_prefix: str = "<|fim_prefix|>"
    fim_suffix: str = "<|fim_suffix|>"
    fim_middle: str = "<|fim_middle|>"


@dataclass(frozen=True)
class Segment:
    """A piece of the prompt: ``kind`` is "control" (one special token) or "text" (user text)."""

    kind: str
    text: str
    role: str  # "repo", "context", "file", "prefix", "suffix", "middle"


@dataclass(frozen=True)
class RepoPrompt:
    segments: tuple[Segment, ...]
    included: tuple[RetrievedChunk, ...]  # in prompt order
    dropped: tuple[RetrievedChunk, ...]  # did not fit
    context_tokens: int  # cost of the repo line and context files, as counted for the budget
    prefix: str  # the prefix actually used
    suffix: str
    truncated_prefix: bool
    truncated_suffix: bool
    stable_segments: int  # leading segments that depend only on the chosen chunks (KV-reusable)
    outlined: tuple[RetrievedChunk, ...] = ()  # signature pieces that fit, in prompt order

    def render(self) -> str:
        """The prompt as one string (for logs and tests; the engine tokenizes ``segments``)."""
        return "".join(segment.text for segment in self.segments)


def keep_last_lines(text: str, max_tokens: int, count_tokens: CountTokens) -> tuple[str, bool]:
    """The longest tail of ``text`` that starts at a line start and costs at most ``max_tokens``.

    Binary search over the number of kept lines: ``count_tokens`` runs O(log lines) times.
    """
    if count_tokens(text) <= max_tokens:
        return text, False
    starts = [0] + [i + 1 for i, ch in enumerate(text) if ch == "\n"]
    low, high = 0, len(starts)  # keep text[starts[k]:] for the smallest k that fits
    while low < high:
        middle = (low + high) // 2
        if count_tokens(text[starts[middle] :]) <= max_tokens:
            high = middle
        else:
            low = middle + 1
    kept = text[starts[low] :] if low < len(starts) else ""
    return kept, True


def keep_first_lines(text: str, max_tokens: int, count_tokens: CountTokens) -> tuple[str, bool]:
    """The longest head of ``text`` that ends at a line end and costs at most ``max_tokens``."""
    if count_tokens(text) <= max_tokens:
        return text, False
    ends = [i + 1 for i, ch in enumerate(text) if ch == "\n"]
    low, high = 0, len(ends)  # keep text[:ends[k-1]] for the largest k that fits (k=0: nothing)
    while low < high:
        middle = (low + high + 1) // 2
        if count_tokens(text[: ends[middle - 1]]) <= max_tokens:
            low = middle
        else:
            high = middle - 1
    return (text[: ends[low - 1]] if low > 0 else ""), True


def chunk_head(chunk: RetrievedChunk, max_tokens: int, count_tokens: CountTokens) -> RetrievedChunk:
    """``chunk`` cut to its first lines within ``max_tokens`` (at least its first line), or itself when it fits.

    Why: a definition's head (decorators, signature, docstring) is most of what a line
    that uses the name needs, in a fraction of a 60-line chunk's tokens.
    """
    text = chunk.text if chunk.text.endswith("\n") else chunk.text + "\n"
    kept, cut = keep_first_lines(text, max_tokens, count_tokens)
    if not cut:
        return chunk
    lines = max(1, kept.count("\n"))
    if lines >= chunk.end_line - chunk.start_line:
        return chunk
    head = "\n".join(chunk.text.split("\n")[:lines])
    return replace(chunk, end_line=chunk.start_line + lines, text=head, cut=True)


def _file_body(path: str, chunks: list[RetrievedChunk]) -> str:
    """The chunks of one file in line order; gaps marked with an elision comment."""
    spec = language_for_path(path)
    elision = f"{spec.line_comment} ..." if spec else "..."
    ordered = sorted(chunks, key=lambda c: (c.start_line, c.end_line))
    parts: list[str] = []
    previous_end: int | None = None
    for chunk in ordered:
        if previous_end is not None and chunk.start_line > previous_end:
            parts.append(elision)
        elif previous_end is None and chunk.start_line > 0:
            parts.append(elision)
        parts.append(chunk.text.rstrip("\n"))
        previous_end = chunk.end_line
    if ordered and ordered[-1].cut:
        parts.append(elision)
    return "\n".join(parts) + "\n"


def _context_cost(repo_line: str | None, files: dict[str, list[RetrievedChunk]], count_tokens: CountTokens,
                  cache: dict[str, int]) -> int:
    total = 1 + count_tokens(repo_line) if repo_line is not None else 0
    for path, chunks in files.items():
        body = f"{path}\n{_file_body(path, chunks)}"
        if body not in cache:
            cache[body] = count_tokens(body)
        total += 1 + cache[body]
    return total


def assemble_repo_prompt(
    chunks: list[RetrievedChunk] | tuple[RetrievedChunk, ...],
    current_path: str,
    prefix: str,
    suffix: str,
    count_tokens: CountTokens,
    budget: ContextBudget = ContextBudget(),
    *,
    repo_name: str = "",
    markers: RepoFormat = RepoFormat(),
    order: str = "path",
    outline: list[RetrievedChunk] | tuple[RetrievedChunk, ...] = (),
) -> RepoPrompt:
    """The repo-level FIM prompt as segments (see the module docstring for order and budget)."""
    # 1. Prefix and suffix, each cut to its budget on line boundaries.
    kept_prefix, cut_prefix = keep_last_lines(prefix, budget.max_prefix_tokens, count_tokens)
    kept_suffix, cut_suffix = keep_first_lines(suffix, budget.max_suffix_tokens, count_tokens)

    # 2. Context: best chunks first, each kept only if the whole context still fits.
    repo_line = f"{repo_name}\n" if repo_name else None
    chosen: dict[str, list[RetrievedChunk]] = {}
    dropped: list[RetrievedChunk] = []
    cache: dict[str, int] = {}
    cost = _context_cost(repo_line, {}, count_tokens, cache)

    def add_if_fits(item: RetrievedChunk, limit: int) -> bool:
        nonlocal chosen, cost
        trial = {path: list(items) for path, items in chosen.items()}
        trial.setdefault(item.path, []).append(item)
        trial_cost = _context_cost(repo_line, trial, count_tokens, cache)
        if trial_cost > limit:
            return False
        chosen, cost = trial, trial_cost
        return True

    for chunk in sorted(chunks, key=lambda c: -c.score):
        if add_if_fits(chunk, budget.max_context_tokens):
            continue
        head = chunk_head(chunk, budget.max_chunk_tokens, count_tokens) if budget.max_chunk_tokens is not None else chunk
        if head is chunk or not add_if_fits(head, budget.max_context_tokens):
            dropped.append(chunk)
    chunks_by_path = {path: sorted(items, key=lambda c: c.start_line) for path, items in chosen.items()}
    # 2b. Signatures of likely module attributes, in their own budget, never overlapping a chunk.
    outlined: list[RetrievedChunk] = []
    limit = cost + budget.max_outline_tokens
    for piece in sorted(outline, key=lambda c: -c.score):
        overlaps = any(c.start_line < piece.end_line and piece.start_line < c.end_line for c in chunks_by_path.get(piece.path, ()))
        if not overlaps and add_if_fits(piece, limit):
            outlined.append(piece)
    if not chosen:
        cost = 0

    # 3. Segments: stable part (repo line, context files by path), then the current file.
    segments: list[Segment] = []
    if chosen and repo_line is not None:
        segments += [Segment(CONTROL, markers.repo_name, "repo"), Segment(TEXT, repo_line, "repo")]
    included: list[RetrievedChunk] = []
    if order == "score":  # the best file last, next to the current one
        file_order = sorted(chosen, key=lambda path: (max(c.score for c in chosen[path]), path))
    else:
        assert order == "path", order
        file_order = sorted(chosen)
    for path in file_order:
        segments += [Segment(CONTROL, markers.file_sep, "context"), Segment(TEXT, f"{path}\n{_file_body(path, chosen[path])}", "context")]
        included += chunks_by_path.get(path, [])
    stable = len(segments)
    segments += [
        Segment(CONTROL, markers.file_sep, "file"),
        Segment(TEXT, f"{current_path}\n", "file"),
        Segment(CONTROL, markers.fim_prefix, "prefix"),
        Segment(TEXT, kept_prefix, "prefix"),
        Segment(CONTROL, markers.fim_suffix, "suffix"),
        Segment(TEXT, kept_suffix, "suffix"),
        Segment(CONTROL, markers.fim_middle, "middle"),
    ]
    outlined.sort(key=lambda c: (file_order.index(c.path), c.start_line))
    return RepoPrompt(tuple(segments), tuple(included), tuple(dropped), cost, kept_prefix, kept_suffix,
                      cut_prefix, cut_suffix, stable, tuple(outlined))
