"""Split a source file into syntax-aware chunks: the units retrieval returns and prompts quote.

Why syntax-aware: a chunk cut at a fixed line count starts mid-function and ends
mid-expression; the model then sees half a definition. Cutting on the tree's
top-level nodes gives whole functions and classes, and a big class is split once
more into its members so a 400-line class does not cost the whole context budget.

Rules, in order (line numbers 0-based, ``end_line`` exclusive):

1. Each top-level node is a unit. A node that *is* a definition, or whose direct
   child is (``decorated_definition``, ``export_statement``), is a definition unit;
   comments (and Rust attributes) right above a definition join it.
2. A definition unit of at least ``min_definition_lines`` lines is its own chunk.
   If it is longer than ``max_lines`` and its kind is a container of the language
   (class, impl, trait ...), it becomes a ``header`` chunk (everything above the
   first member) plus the chunks of its body, by these same rules.
3. Everything else (imports, assignments, small definitions) is grouped with its
   neighbours into ``statements`` chunks of at most ``max_group_lines`` lines
   (``imports`` when the group holds only import statements).
4. Any chunk still longer than ``max_lines`` is cut into windows of ``max_lines``.

Example (Python)::

    >>> src = "import os\\n\\nX = 1\\n\\n\\ndef area(r):\\n    '''Area.'''\\n    return 3.14 * r * r\\n"
    >>> [(c.kind, c.start_line, c.end_line, [s.name for s in c.symbols]) for c in chunk_source("geo.py", src).chunks]
    [('statements', 0, 3, ['X']), ('definition', 5, 8, ['area'])]
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import tree_sitter

from context.languages import LanguageSpec, language_for_path
from context.symbols import DefinitionNode, Import, ParsedFile, Symbol, parse_source


@dataclass(frozen=True)
class ChunkOptions:
    """Chunk sizes in lines; defaults keep a chunk around 300-600 tokens of code."""

    max_lines: int = 60
    max_group_lines: int = 30
    min_definition_lines: int = 3


@dataclass(frozen=True)
class Chunk:
    """A piece of one file: lines ``[start_line, end_line)`` (0-based) and the names it defines."""

    path: str
    start_line: int
    end_line: int
    text: str
    kind: str  # "definition" | "header" | "statements" | "imports" | "part"
    symbols: tuple[Symbol, ...]


@dataclass(frozen=True)
class FileChunks:
    """Everything the index keeps about one parsed file."""

    path: str
    language: str
    chunks: tuple[Chunk, ...]
    imports: tuple[Import, ...]
    package: str | None


@dataclass
class _Span:
    start: int
    end: int
    kind: str
    definition: DefinitionNode | None = None
    imports_only: bool = False


def _rows(node: tree_sitter.Node) -> tuple[int, int]:
    row, column = node.end_point
    end = row + 1 if column > 0 else row
    return node.start_point[0], max(end, node.start_point[0] + 1)


class _Chunker:
    def __init__(self, spec: LanguageSpec, parsed: ParsedFile, options: ChunkOptions) -> None:
        self.spec = spec
        self.options = options
        self.by_node: dict[int, DefinitionNode] = {}
        for definition in parsed.definitions:
            self.by_node.setdefault(definition.node.id, definition)
        self.import_rows = {node.start_point[0] for node in parsed.import_nodes}
        self.import_bytes = [(node.start_byte, node.end_byte) for node in parsed.import_nodes]

    def _definition_of(self, node: tree_sitter.Node) -> DefinitionNode | None:
        """The definition a unit stands for: the node itself or one of its direct children."""
        found = self.by_node.get(node.id)
        if found is not None and found.kind not in self.spec.symbol_only:
            return found
        for child in node.named_children:
            found = self.by_node.get(child.id)
            if found is not None and found.kind not in self.spec.symbol_only:
                return found
        return None

    def _is_import(self, node: tree_sitter.Node) -> bool:
        return any(node.start_byte <= start and end <= node.end_byte for start, end in self.import_bytes)

    def spans(self, nodes: list[tree_sitter.Node]) -> list[_Span]:
        units: list[_Span] = []
        for node in nodes:
            start, end = _rows(node)
            if node.type in self.spec.comment_nodes:
                units.append(_Span(start, end, "comment"))
                continue
            definition = self._definition_of(node)
            if definition is not None:
                units.append(_Span(start, end, "definition", definition))
            else:
                units.append(_Span(start, end, "statements", imports_only=self._is_import(node)))
        # Comments directly above a definition (no blank line between) belong to it.
        for index in range(len(units) - 2, -1, -1):
            unit, below = units[index], units[index + 1]
            if unit.kind == "comment" and below.kind == "definition" and below.start - unit.end <= 0:
                below.start = unit.start
                units.pop(index)
        out: list[_Span] = []
        group: _Span | None = None
        for unit in units:
            big_enough = unit.end - unit.start >= self.options.min_definition_lines
            if unit.kind == "definition" and big_enough:
                if group is not None:
                    out.append(group)
                    group = None
                out += self._definition_spans(unit)
                continue
            only_imports = unit.imports_only
            if group is not None and unit.end - group.start > self.options.max_group_lines:
                out.append(group)
                group = None
            if group is None:
                group = _Span(unit.start, unit.end, "statements", imports_only=only_imports)
            else:
                group.end = max(group.end, unit.end)
                group.imports_only = group.imports_only and only_imports
        if group is not None:
            out.append(group)
        for span in out:
            if span.kind == "statements" and span.imports_only:
                span.kind = "imports"
        return out

    def _definition_spans(self, unit: _Span) -> list[_Span]:
        definition = unit.definition
        assert definition is not None
        if unit.end - unit.start <= self.options.max_lines or definition.kind not in self.spec.containers:
            return [unit]
        body = definition.node.child_by_field_name("body")
        if body is None or not body.named_children:
            return [unit]
        members = self.spans(list(body.named_children))
        if not any(span.kind == "definition" for span in members):
            return [unit]
        # The header runs to the first member definition: class line, docstring, fields.
        first = next(i for i, span in enumerate(members) if span.kind == "definition")
        header_end = members[first].start
        members = members[first:]
        header = [_Span(unit.start, header_end, "header", definition)] if header_end > unit.start else []
        members[-1].end = max(members[-1].end, unit.end)  # the closing brace goes with the last member
        return header + members


def _windows(span: _Span, max_lines: int) -> list[_Span]:
    if span.end - span.start <= max_lines:
        return [span]
    out = []
    for start in range(span.start, span.end, max_lines):
        kind = span.kind if start == span.start else "part"
        out.append(_Span(start, min(span.end, start + max_lines), kind))
    return out


def chunk_parsed(path: str, text: str, spec: LanguageSpec, parsed: ParsedFile, options: ChunkOptions = ChunkOptions()) -> FileChunks:
    """Chunks of an already parsed file, each carrying the symbols whose name line it holds."""
    lines = text.split("\n")
    chunker = _Chunker(spec, parsed, options)
    spans: list[_Span] = []
    for span in chunker.spans(list(parsed.tree.root_node.named_children)):
        spans += _windows(span, options.max_lines)
    spans = [s for s in spans if s.end > s.start and any(line.strip() for line in lines[s.start : s.end])]
    starts = [s.start for s in spans]
    symbols: list[list[Symbol]] = [[] for _ in spans]
    for definition in parsed.definitions:
        index = bisect.bisect_right(starts, definition.name_line) - 1
        if index >= 0 and definition.name_line < spans[index].end:
            symbols[index].append(Symbol(definition.name, definition.kind, definition.name_line, definition.container))
    chunks = tuple(
        Chunk(path, span.start, span.end, "\n".join(lines[span.start : span.end]), span.kind, tuple(found))
        for span, found in zip(spans, symbols)
    )
    return FileChunks(path, spec.name, chunks, parsed.imports, parsed.package)


def chunk_source(path: str, text: str, options: ChunkOptions = ChunkOptions(), spec: LanguageSpec | None = None) -> FileChunks:
    """Parse and chunk one file; the language comes from the path unless ``spec`` is given."""
    spec = spec or language_for_path(path)
    if spec is None:
        raise ValueError(f"no language in languages.toml for {path!r}")
    return chunk_parsed(path, text, spec, parse_source(spec, text), options)
