"""Convert LSP positions (columns in the negotiated encoding) to engine positions (code points) and back.

Why: an LSP client counts a column in UTF-16 code units unless both sides agreed
on UTF-8 bytes or UTF-32 code points; the engine counts code points (Python
``str`` indices). "😀" is 1 code point, 2 UTF-16 units and 4 UTF-8 bytes, so a
column passed through unconverted puts the cursor in the wrong place after the
first emoji or accented letter.

Rules (from the LSP specification):

- Lines end at ``\\n``, ``\\r\\n`` or ``\\r``; the line break is not part of the line.
- A column past the end of its line means the end of the line (clamp).
- A column inside one character (between the two halves of a surrogate pair, or
  inside a multi-byte UTF-8 sequence) is not defined; we round it down to the
  start of that character, so a position never splits a character.
- A line past the end of the document means the end of the document.

The engine counts lines by ``\\n`` only (``engine/documents.py``), so a bare
``\\r`` makes LSP and engine line numbers differ: ``engine_position_at`` goes
through the code-point offset in the whole text to stay exact.

Example::

    >>> column_to_code_points("x = '😀'", 7, "utf-16")  # x = '😀' : the closing quote
    6
    >>> column_from_code_points("x = '😀'", 6, "utf-8")
    9
"""

from __future__ import annotations

import bisect
import re
from typing import Sequence

from lsprotocol import types as lsp

from engine.types import Position as EnginePosition
from engine.types import Range as EngineRange

Encoding = lsp.PositionEncodingKind | str

_LINE_BREAK = re.compile(r"\r\n|\r|\n")


_KNOWN_ENCODINGS = frozenset(kind.value for kind in lsp.PositionEncodingKind)


def _require_known(encoding: Encoding) -> None:
    if encoding not in _KNOWN_ENCODINGS:
        raise ValueError(f"unknown position encoding {encoding!r}; expected utf-8, utf-16 or utf-32")


def _units(char: str, encoding: Encoding) -> int:
    """How many code units one code point takes in ``encoding``."""
    code = ord(char)
    if encoding == lsp.PositionEncodingKind.Utf16:
        return 2 if code > 0xFFFF else 1
    if encoding == lsp.PositionEncodingKind.Utf8:
        return 1 if code < 0x80 else 2 if code < 0x800 else 3 if code < 0x10000 else 4
    _require_known(encoding)
    return 1


def column_to_code_points(line: str, column: int, encoding: Encoding) -> int:
    """Code-point column for a client ``column`` on ``line`` (no line break); clamps, rounds down inside a character."""
    column = max(column, 0)
    if encoding == lsp.PositionEncodingKind.Utf32 or line.isascii():
        _require_known(encoding)
        return min(column, len(line))
    units = 0
    for index, char in enumerate(line):
        units += _units(char, encoding)
        if units > column:  # the column ends inside or before this character
            return index
    return len(line)


def column_from_code_points(line: str, column: int, encoding: Encoding) -> int:
    """Client column for a code-point ``column`` on ``line``; clamps to the line's length."""
    column = min(max(column, 0), len(line))
    if encoding == lsp.PositionEncodingKind.Utf32 or line.isascii():
        _require_known(encoding)
        return column
    return sum(_units(char, encoding) for char in line[:column])


def split_lines(text: str) -> list[str]:
    """The document's lines as LSP counts them, without their line breaks (``"a\\n"`` has 2 lines)."""
    return _LINE_BREAK.split(text)


def line_starts(text: str) -> list[int]:
    """Code-point offset where each LSP line starts."""
    return [0] + [match.end() for match in _LINE_BREAK.finditer(text)]


def to_engine_position(lines: Sequence[str], position: lsp.Position, encoding: Encoding) -> EnginePosition:
    """Engine position for a client position, given the document's lines (``split_lines``).

    Assumes no bare ``\\r`` (then LSP and engine lines agree); use ``offset_at`` +
    ``engine_position_at`` for arbitrary text.
    """
    assert lines, "a document has at least one (possibly empty) line"
    if position.line >= len(lines):
        return EnginePosition(len(lines) - 1, len(lines[-1]))
    line = lines[position.line]
    return EnginePosition(position.line, column_to_code_points(line, position.character, encoding))


def to_client_position(lines: Sequence[str], position: EnginePosition, encoding: Encoding) -> lsp.Position:
    """Client position for an engine position, given the document's lines (``split_lines``)."""
    assert lines, "a document has at least one (possibly empty) line"
    if position.line >= len(lines):
        last = len(lines) - 1
        return lsp.Position(line=last, character=column_from_code_points(lines[last], len(lines[last]), encoding))
    line = lines[position.line]
    return lsp.Position(line=position.line, character=column_from_code_points(line, position.character, encoding))


def to_engine_range(lines: Sequence[str], range_: lsp.Range, encoding: Encoding) -> EngineRange:
    return EngineRange(
        to_engine_position(lines, range_.start, encoding), to_engine_position(lines, range_.end, encoding)
    )


def to_client_range(lines: Sequence[str], range_: EngineRange, encoding: Encoding) -> lsp.Range:
    return lsp.Range(
        start=to_client_position(lines, range_.start, encoding), end=to_client_position(lines, range_.end, encoding)
    )


def offset_at(text: str, position: lsp.Position, encoding: Encoding, starts: list[int] | None = None) -> int:
    """Code-point offset in ``text`` of a client position (clamped into the text)."""
    starts = starts if starts is not None else line_starts(text)
    if position.line >= len(starts):
        return len(text)
    start = starts[position.line]
    end = _content_end(text, starts, position.line)
    return start + column_to_code_points(text[start:end], position.character, encoding)


def client_position_at(text: str, offset: int, encoding: Encoding, starts: list[int] | None = None) -> lsp.Position:
    """Client position of a code-point offset in ``text``."""
    starts = starts if starts is not None else line_starts(text)
    offset = min(max(offset, 0), len(text))
    line = bisect.bisect_right(starts, offset) - 1
    start = starts[line]
    end = _content_end(text, starts, line)
    return lsp.Position(line=line, character=column_from_code_points(text[start:end], offset - start, encoding))


def engine_position_at(text: str, offset: int) -> EnginePosition:
    """Engine position of a code-point offset: lines end at ``\\n`` only, as in ``engine/documents.py``."""
    assert 0 <= offset <= len(text), f"offset {offset} outside a text of {len(text)} code points"
    line = text.count("\n", 0, offset)
    return EnginePosition(line, offset - (text.rfind("\n", 0, offset) + 1))


def _content_end(text: str, starts: list[int], line: int) -> int:
    """Offset where ``line``'s content ends (before its line break)."""
    if line + 1 >= len(starts):
        return len(text)
    end = starts[line + 1]
    if text[end - 1] == "\n":
        end -= 1
        if end > starts[line] and text[end - 1] == "\r":
            end -= 1
    else:  # a bare "\r"
        end -= 1
    return end
