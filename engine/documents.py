"""Open documents: text and version, kept in step with the client's edits.

Why: the engine completes at a position in a document it already holds, so a
keystroke sends a small edit rather than the whole file. Every edit batch is
validated in full before any of it is applied: a bad edit changes nothing.

Example::

    >>> store = DocumentStore()
    >>> _ = store.open("file:///a.py", "python", 1, "x = 1\\n")
    >>> edit = TextEdit(Range(Position(0, 4), Position(0, 5)), "42")
    >>> store.edit("file:///a.py", 2, [edit]).text
    'x = 42\\n'
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from engine.errors import DocumentAlreadyOpen, DocumentNotFound, InvalidInput, PositionOutOfRange, StaleVersion, TooLarge
from engine.types import DocumentState, Position, TextEdit

DEFAULT_MAX_DOCUMENT_CHARS = 2_000_000
DEFAULT_MAX_DOCUMENTS = 512


def line_starts(text: str) -> list[int]:
    """Offsets where each line starts; lines end at ``\\n`` (a ``\\r`` before it belongs to the line)."""
    starts = [0]
    index = text.find("\n")
    while index != -1:
        starts.append(index + 1)
        index = text.find("\n", index + 1)
    return starts


def offset_of(text: str, starts: list[int], position: Position) -> int:
    """Code-point offset of ``position``; raises PositionOutOfRange when it is not in the text."""
    if position.line < 0 or position.character < 0:
        raise PositionOutOfRange(f"negative position {position.line}:{position.character}")
    if position.line >= len(starts):
        raise PositionOutOfRange(
            f"line {position.line} is past the end of the document ({len(starts)} lines)"
        )
    start = starts[position.line]
    end = starts[position.line + 1] - 1 if position.line + 1 < len(starts) else len(text)
    if start + position.character > end:
        raise PositionOutOfRange(
            f"character {position.character} is past the end of line {position.line} "
            f"(length {end - start})"
        )
    return start + position.character


@dataclass
class Document:
    uri: str
    language_id: str
    version: int
    text: str

    def state(self) -> DocumentState:
        return DocumentState(
            uri=self.uri, version=self.version, characters=len(self.text), lines=self.text.count("\n") + 1
        )

    def offset(self, position: Position) -> int:
        return offset_of(self.text, line_starts(self.text), position)

    def split_at(self, position: Position) -> tuple[str, str]:
        """(prefix, suffix) around the cursor."""
        at = self.offset(position)
        return self.text[:at], self.text[at:]


def apply_edits(text: str, edits: list[TextEdit]) -> str:
    """Apply LSP-style edits in order; each edit's range refers to the text left by the previous ones."""
    return apply_edits_with_offsets(text, edits)[0]


def apply_edits_with_offsets(text: str, edits: list[TextEdit]) -> tuple[str, list[tuple[int, int, str]]]:
    """``apply_edits``, also returning each edit as (start, end, text) code-point offsets."""
    offsets = []
    for edit in edits:
        starts = line_starts(text)
        start = offset_of(text, starts, edit.range.start)
        end = offset_of(text, starts, edit.range.end)
        if end < start:
            raise InvalidInput(
                f"edit range ends before it starts: {edit.range.start} > {edit.range.end}"
            )
        text = text[:start] + edit.text + text[end:]
        offsets.append((start, end, edit.text))
    return text, offsets


class DocumentStore:
    """Thread-safe map from URI to Document, with size limits."""

    def __init__(self, max_document_chars: int = DEFAULT_MAX_DOCUMENT_CHARS, max_documents: int = DEFAULT_MAX_DOCUMENTS) -> None:
        self.max_document_chars = max_document_chars
        self.max_documents = max_documents
        self._documents: dict[str, Document] = {}
        self._lock = threading.Lock()

    def _check_size(self, uri: str, text: str) -> None:
        if len(text) > self.max_document_chars:
            raise TooLarge(
                f"{uri}: {len(text)} characters exceeds the limit of {self.max_document_chars}"
            )

    def open(self, uri: str, language_id: str, version: int, text: str) -> Document:
        if not uri:
            raise InvalidInput("document uri is empty")
        self._check_size(uri, text)
        with self._lock:
            if uri in self._documents:
                raise DocumentAlreadyOpen(f"{uri} is already open; close it first or send edits")
            if len(self._documents) >= self.max_documents:
                raise TooLarge(f"too many open documents (limit {self.max_documents})")
            document = Document(uri=uri, language_id=language_id, version=version, text=text)
            self._documents[uri] = document
            return document

    def get(self, uri: str) -> Document:
        with self._lock:
            document = self._documents.get(uri)
        if document is None:
            raise DocumentNotFound(f"{uri} is not open")
        return document

    def get_unlocked(self, uri: str) -> Document:
        """``get`` for a caller that already holds ``locked()``."""
        document = self._documents.get(uri)
        if document is None:
            raise DocumentNotFound(f"{uri} is not open")
        return document

    def edit(self, uri: str, version: int, edits: list[TextEdit], on_applied=None) -> Document:
        """Apply a batch atomically; ``on_applied(document, offsets)`` runs under the store lock,
        so listeners (KV sessions) see batches in the order they were applied."""
        with self._lock:
            document = self._documents.get(uri)
            if document is None:
                raise DocumentNotFound(f"{uri} is not open")
            if version <= document.version:
                raise StaleVersion(
                    f"{uri}: edit for version {version} but the document is already at {document.version}"
                )
            new_text, offsets = apply_edits_with_offsets(document.text, edits)
            self._check_size(uri, new_text)
            document.text = new_text
            document.version = version
            if on_applied is not None:
                on_applied(document, offsets)
            return document

    def close(self, uri: str) -> None:
        with self._lock:
            if self._documents.pop(uri, None) is None:
                raise DocumentNotFound(f"{uri} is not open")

    def locked(self) -> threading.Lock:
        """The store's lock: hold it to read a document's text with no edit landing meanwhile."""
        return self._lock

    def uris(self) -> list[str]:
        with self._lock:
            return list(self._documents)
