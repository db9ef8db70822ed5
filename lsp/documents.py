"""The language server's own copy of each open document, for converting positions.

Why: a client's change range is in client units (UTF-16 by default) and refers
to the text *before* that change, while the engine wants code points. So every
change is converted against the text as it was, then applied, in order. pygls
keeps a workspace too, but applies a whole ``didChange`` batch before our handler
runs, so it cannot give us the text between two changes of one batch.

Example::

    >>> doc = MirroredDocument("file:///a.py", "python", 1, "s = '😀'\\n")
    >>> change = lsp.TextDocumentContentChangePartial(
    ...     range=lsp.Range(start=lsp.Position(line=0, character=8), end=lsp.Position(line=0, character=8)),
    ...     text=" + 'x'")
    >>> doc.apply_change(change, "utf-16")  # UTF-16 column 8 = code point 7: the emoji is 2 units
    TextEdit(range=Range(start=Position(line=0, character=7), end=Position(line=0, character=7)), text=" + 'x'")
    >>> doc.text
    "s = '😀' + 'x'\\n"
"""

from __future__ import annotations

from dataclasses import dataclass

from lsprotocol import types as lsp

from engine.types import Position as EnginePosition
from engine.types import Range as EngineRange
from engine.types import TextEdit
from lsp.positions import Encoding, client_position_at, engine_position_at, line_starts, offset_at


@dataclass(frozen=True)
class AppliedChange:
    """One client change as the engine sees it, plus where it fell in the text before it (code points)."""

    edit: TextEdit
    start: int
    end: int


@dataclass
class MirroredDocument:
    uri: str
    language_id: str
    version: int
    text: str

    def apply_change(self, change: lsp.TextDocumentContentChangeEvent, encoding: Encoding) -> TextEdit:
        """Apply one client change to the mirror; returns the same change as an engine edit."""
        return self.apply(change, encoding).edit

    def apply(self, change: lsp.TextDocumentContentChangeEvent, encoding: Encoding) -> AppliedChange:
        """``apply_change``, also saying which code points of the old text it replaced."""
        if not isinstance(change, lsp.TextDocumentContentChangePartial):  # a whole-document replacement
            end = len(self.text)
            edit = TextEdit(EngineRange(EnginePosition(0, 0), engine_position_at(self.text, end)), change.text)
            self.text = change.text
            return AppliedChange(edit, 0, end)
        starts = line_starts(self.text)
        start = offset_at(self.text, change.range.start, encoding, starts)
        end = offset_at(self.text, change.range.end, encoding, starts)
        start, end = min(start, end), max(start, end)  # a reversed range is a client bug; read it as the span
        edit = TextEdit(EngineRange(engine_position_at(self.text, start), engine_position_at(self.text, end)), change.text)
        self.text = self.text[:start] + change.text + self.text[end:]
        return AppliedChange(edit, start, end)

    def offset(self, position: lsp.Position, encoding: Encoding) -> int:
        """Code-point offset of a client position (clamped into the document)."""
        return offset_at(self.text, position, encoding)

    def engine_position(self, position: lsp.Position, encoding: Encoding) -> EnginePosition:
        """The engine position of a client position (clamped into the document)."""
        return engine_position_at(self.text, offset_at(self.text, position, encoding))

    def clamped_client_position(self, position: lsp.Position, encoding: Encoding) -> lsp.Position:
        """The client position the engine position stands for: past-end and mid-character columns resolved."""
        return client_position_at(self.text, offset_at(self.text, position, encoding), encoding)

    def word_before(self, position: lsp.Position, encoding: Encoding) -> str:
        """The identifier characters just before a position (what a completion menu filters on)."""
        offset = offset_at(self.text, position, encoding)
        start = offset
        while start > 0 and (self.text[start - 1].isalnum() or self.text[start - 1] == "_"):
            start -= 1
        return self.text[start:offset]
