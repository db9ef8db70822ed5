"""What a file defines and imports, read from its tree-sitter tree with the language's query.

Why both in one pass: the chunker needs the definition nodes (where chunks start
and end) and retrieval needs the names and imports; one query run over one parse
gives all three.

Example::

    >>> parsed = parse_source(load_languages()["python"], "from .shapes import Circle as C\\n\\ndef area(r):\\n    return C(r).area()\\n")
    >>> [(d.kind, d.name, d.name_line) for d in parsed.definitions]
    [('function', 'area', 2)]
    >>> parsed.imports
    (Import(module='.shapes', name='Circle', alias='C', wildcard=False, line=0, binding='C', end_line=0),)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import tree_sitter

from context.languages import LanguageSpec, load_languages

__all__ = ["CHAIN", "split_chain", "import_usages", "Symbol", "Import", "DefinitionNode", "ParsedFile", "parse_source", "expand_rust_use", "load_languages"]


CHAIN = re.compile(r"(?<![\w$.])[A-Za-z_$][\w$]*(?:\s*(?:\.|::)\s*[A-Za-z_$][\w$]*)*")
_CHAIN_SEPARATOR = re.compile(r"\s*(?:\.|::)\s*")


def split_chain(chain: str) -> list[str]:
    """``"shapes.Circle.area"`` / ``"geo::Circle::new"`` -> its names."""
    return _CHAIN_SEPARATOR.split(chain)


def import_usages(text: str, imports: tuple[Import, ...] | list[Import], max_parts: int = 3) -> dict[str, tuple[int, ...]]:
    """Lines (0-based) where each chain starting with an imported name is used, import lines excluded.

    Why at index time: which imported names a file uses, and where, predicts what
    the next line will use; scanning a 3,000-line file per keystroke would not fit
    the retrieval budget, so the index keeps this small map per file.

    >>> import_usages("import os\\nx = os.path.join(a)\\ny = os.sep\\n", [Import("os", binding="os")])
    {'os.path.join': (1,), 'os.sep': (2,)}
    """
    bindings = {imp.binding for imp in imports if imp.binding}
    import_lines = {line for imp in imports for line in imp.lines}
    found: dict[str, list[int]] = {}
    if not bindings:
        return {}
    for number, line in enumerate(text.split("\n")):
        if number in import_lines:
            continue
        for chain in CHAIN.findall(line):
            parts = split_chain(chain)
            if parts[0] in bindings:
                key = ".".join(parts[:max_parts]) if "::" not in chain else "::".join(parts[:max_parts])
                found.setdefault(key, []).append(number)
    return {chain: tuple(lines) for chain, lines in found.items()}


@dataclass(frozen=True)
class Symbol:
    """A name a chunk defines. ``line`` is 0-based (the line of the name, not of a decorator)."""

    name: str
    kind: str
    line: int
    container: str | None = None  # the class / impl / type a method belongs to


@dataclass(frozen=True)
class Import:
    """One imported name (or module) and the local name it binds.

    ``name`` None means the module itself is bound (``import a.b``, ``import * as ns``,
    a Go package); ``wildcard`` means all of the module's names are (``from m import *``).
    """

    module: str
    name: str | None = None
    alias: str | None = None
    wildcard: bool = False
    line: int = 0
    binding: str | None = None
    end_line: int | None = None  # last line of the import statement (None: same as ``line``)

    @property
    def lines(self) -> range:
        return range(self.line, (self.end_line if self.end_line is not None else self.line) + 1)


@dataclass(frozen=True)
class DefinitionNode:
    """A definition as the chunker sees it: the node, its kind and name, and the container's name."""

    node: tree_sitter.Node
    kind: str
    name: str
    name_line: int
    container: str | None


@dataclass(frozen=True)
class ParsedFile:
    tree: tree_sitter.Tree
    definitions: tuple[DefinitionNode, ...]  # document order; local (function-nested) ones dropped
    imports: tuple[Import, ...]
    import_nodes: tuple[tree_sitter.Node, ...]  # import statements and package clauses
    package: str | None


def _text(node: tree_sitter.Node) -> str:
    return node.text.decode("utf-8", "replace") if node.text is not None else ""


_TYPE_NAME = re.compile(r"(?:[A-Za-z_]\w*::)*([A-Za-z_]\w*)")


def _definition_name(kind: str, node: tree_sitter.Node) -> str:
    text = _text(node)
    if kind == "impl":  # impl<T> Foo<T> -> Foo; impl &'a Bar -> Bar
        match = _TYPE_NAME.search(text.lstrip("&").replace("'", ""))
        return match.group(1) if match else text
    return text


def _binding(spec: LanguageSpec, module: str, name: str | None, alias: str | None, wildcard: bool) -> str | None:
    if wildcard:
        return None
    if alias:
        return alias
    if name:
        return name
    if spec.resolver == "python":  # import a.b binds a
        return module.lstrip(".").split(".")[0] or None
    if spec.resolver == "go":  # "example.com/x/util/v2" binds util
        parts = [p for p in module.split("/") if p]
        if len(parts) > 1 and re.fullmatch(r"v\d+", parts[-1]):
            parts.pop()
        return parts[-1].replace("-", "_") if parts else None
    return None


def expand_rust_use(path: str) -> list[tuple[list[str], str | None, bool]]:
    """Expand a Rust use tree into (segments, alias, wildcard) triples.

    >>> expand_rust_use("crate::geo::{self, Circle, Square as Sq, sub::*}")
    [(['crate', 'geo'], None, False), (['crate', 'geo', 'Circle'], None, False), (['crate', 'geo', 'Square'], 'Sq', False), (['crate', 'geo', 'sub'], None, True)]
    """
    tokens = re.findall(r"::|[{},*]|[A-Za-z_]\w*", path)
    position = 0
    out: list[tuple[list[str], str | None, bool]] = []

    def tree(prefix: list[str]) -> None:
        nonlocal position
        segments, saw_self = list(prefix), False
        while position < len(tokens):
            token = tokens[position]
            if token == "::":
                position += 1
            elif token == "{":
                position += 1
                while position < len(tokens) and tokens[position] != "}":
                    if tokens[position] == ",":
                        position += 1
                    else:
                        tree(segments)
                position += 1
                return
            elif token == "*":
                position += 1
                out.append((segments, None, True))
                return
            elif token in (",", "}"):
                break
            elif token == "as" and position + 1 < len(tokens):
                out.append((segments, tokens[position + 1], False))
                position += 2
                return
            elif token == "self" and prefix and segments == prefix:
                saw_self = True  # a::{self} imports a itself
                position += 1
            else:
                segments = segments + [token]
                position += 1
        if segments and (segments != prefix or saw_self):
            out.append((segments, None, False))

    tree([])
    return out


def _rust_imports(path_node: tree_sitter.Node, line: int, end_line: int) -> list[Import]:
    imports = []
    for segments, alias, wildcard in expand_rust_use(_text(path_node)):
        if wildcard:
            imports.append(Import("::".join(segments), None, None, True, line, None, end_line))
        elif segments:
            module, name = "::".join(segments[:-1]), segments[-1]
            imports.append(Import(module, name, alias, False, line, alias or name, end_line))
    return imports


def _row_of_end(node: tree_sitter.Node) -> int:
    row, column = node.end_point
    return row + 1 if column > 0 else max(row, node.start_point[0] + 1)


def parse_source(spec: LanguageSpec, text: str | bytes) -> ParsedFile:
    """Parse ``text`` and read its definitions, imports and package with ``spec``'s query."""
    source = text.encode("utf-8") if isinstance(text, str) else text
    tree = spec.parser().parse(source)
    matches = tree_sitter.QueryCursor(spec.query_object).matches(tree.root_node)

    found: dict[tuple[int, str], DefinitionNode] = {}
    imports: list[Import] = []
    import_nodes: dict[int, tree_sitter.Node] = {}
    package: str | None = None
    for _, captures in matches:
        if "package" in captures:
            package = _text(captures["package"][0])
            import_nodes[captures["package"][0].id] = captures["package"][0]
            continue
        if "import" in captures:
            statement = captures["import"][0]
            import_nodes[statement.id] = statement
            line, end_line = statement.start_point[0], statement.end_point[0]
            if "import.path" in captures:
                imports += _rust_imports(captures["import.path"][0], line, end_line)
                continue
            module = _text(captures["import.module"][0]) if "import.module" in captures else ""
            wildcard = "import.wildcard" in captures
            if "import.default" in captures:  # JS default import: bound name, the module's default export
                alias = _text(captures["import.default"][0])
                imports.append(Import(module, "default", alias, False, line, alias, end_line))
                continue
            name = _text(captures["import.name"][0]) if "import.name" in captures else None
            alias = _text(captures["import.alias"][0]) if "import.alias" in captures else None
            binding = _binding(spec, module, name, alias, wildcard)
            imports.append(Import(module, name, alias, wildcard, line, binding, end_line))
            continue
        for capture, nodes in captures.items():
            if not capture.startswith("definition."):
                continue
            kind = capture.removeprefix("definition.")
            node = nodes[0]
            name_node = captures["name"][0]
            container = _text(captures["container"][0]) if "container" in captures else None
            name = _definition_name(kind, name_node)
            # One node captured twice (a JS `const f = () => ...` is a variable and a function): the
            # kind that starts a chunk wins over a symbol-only kind.
            previous = found.get((node.id, name))
            if previous is None or previous.kind in spec.symbol_only:
                found[(node.id, name)] = DefinitionNode(node, kind, name, name_node.start_point[0], container)
    # `const fs = require("fs")` is an import, not a definition of fs.
    definitions = [d for d in found.values() if not (d.kind in spec.symbol_only and d.node.id in import_nodes)]
    definitions = _drop_local_definitions(spec, definitions)
    return ParsedFile(
        tree=tree,
        definitions=tuple(definitions),
        imports=tuple(imports),
        import_nodes=tuple(sorted(import_nodes.values(), key=lambda n: n.start_byte)),
        package=package,
    )


def _drop_local_definitions(spec: LanguageSpec, definitions: list[DefinitionNode]) -> list[DefinitionNode]:
    """Keep definitions reachable from outside the file: top level, or members of containers.

    A helper defined inside a function is invisible to other files and would only
    pollute the symbol table; a method inside a class gets the class as container.
    """
    by_node = {d.node.id: d for d in definitions}
    kept = []
    for definition in definitions:
        parent = definition.node.parent
        enclosing = None
        while parent is not None:
            enclosing = by_node.get(parent.id)
            if enclosing is not None:
                break
            parent = parent.parent
        if enclosing is None:
            kept.append(definition)
        elif enclosing.kind in spec.containers:
            container = definition.container or enclosing.name
            kept.append(DefinitionNode(definition.node, definition.kind, definition.name, definition.name_line, container))
    kept.sort(key=lambda d: (d.node.start_byte, -d.node.end_byte))
    return kept
