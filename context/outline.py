"""A module's outline: the signature lines of its likeliest names, without their bodies.

Why: after ``_base.`` the next line uses one of the module's names, and which one
the cursor alone rarely tells (a module offers a median of 27; in half of the
cross-file tasks of ``evals/repo_tasks.py`` the file never used the name before).
Whole chunks of the five likeliest names hold the right one about 60% of the
time; the signature lines of the two nearest modules' 24 likeliest names hold it
about 83% of the time, for the price of two or three chunks. A signature is what
the model needs to write the call: the name, its parameters, its base classes.

A signature runs from the line that names the symbol until its brackets close
(``def wait(fs,\\n         timeout=None):`` is two lines), at most ``max_lines``.
Retrieval turns each ``Signature`` into a ``RetrievedChunk`` covering just those
lines, so prompt assembly merges it into the file's block like any other chunk,
an elision line standing for the body it leaves out.

Example::

    >>> from context.chunks import chunk_source
    >>> src = "def wait(fs,\\n         timeout=None):\\n    '''Wait.'''\\n    return fs\\n"
    >>> chunk = chunk_source("_base.py", src).chunks[0]
    >>> signature_lines(chunk.text, chunk.start_line, chunk.symbols[0].line)
    (0, 2, 'def wait(fs,\\n         timeout=None):')
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from context.index import RepoIndex, SymbolRef

_OPEN = {"(": ")", "[": "]", "{": "}"}
_CLOSE = {v: k for k, v in _OPEN.items()}


@dataclass(frozen=True)
class Signature:
    """Lines ``[start_line, end_line)`` of ``path`` that name and introduce ``name``."""

    path: str
    start_line: int
    end_line: int
    text: str
    name: str
    chunk_id: int
    rank: float  # lower is likelier


def signature_lines(chunk_text: str, chunk_start: int, symbol_line: int, max_lines: int = 3) -> tuple[int, int, str] | None:
    """``(start, end, text)`` of the signature of the symbol named on ``symbol_line`` (0-based, file lines).

    Brackets are counted outside string literals (a simple scan: quotes toggle);
    a line that leaves them all closed ends the signature. None when the line is
    not in the chunk.
    """
    lines = chunk_text.split("\n")
    first = symbol_line - chunk_start
    if not 0 <= first < len(lines):
        return None
    depth = 0
    end = first
    while end < len(lines) and end - first < max_lines:
        depth += _bracket_delta(lines[end])
        end += 1
        if depth <= 0:
            break
    text = "\n".join(line.rstrip() for line in lines[first:end])
    return symbol_line, symbol_line + (end - first), text


def _bracket_delta(line: str) -> int:
    depth, quote = 0, ""
    for ch in line:
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'`":
            quote = ch
        elif ch == "#":
            break
        elif ch in _OPEN:
            depth += 1
        elif ch in _CLOSE:
            depth -= 1
    return depth


def outline(index: RepoIndex, ranked: Iterable[tuple[float, SymbolRef]], exclude: set[int],
            max_names: int) -> list[Signature]:
    """Signatures of the best ``max_names`` of ``ranked`` (lower rank value first), one per symbol.

    ``exclude`` holds chunk ids the prompt shows anyway (the current file's visible window).
    """
    out: list[Signature] = []
    seen: set[tuple[str, int]] = set()
    for rank, ref in sorted(ranked, key=lambda item: item[0]):
        if len(out) >= max_names:
            break
        if ref.chunk_id in exclude or (ref.path, ref.symbol.line) in seen or ref.chunk_id not in index.chunks:
            continue
        chunk = index.chunks[ref.chunk_id]
        found = signature_lines(chunk.text, chunk.start_line, ref.symbol.line)
        if found is None:
            continue
        start, end, text = found
        seen.add((ref.path, ref.symbol.line))
        out.append(Signature(ref.path, start, end, text, ref.symbol.name, ref.chunk_id, rank))
    return out


__all__ = ["Signature", "outline", "signature_lines"]
