"""What a file defines and imports, read from its tree-sitter tree with the language's query.

Why both in one pass: the chunker needs the definition nodes (where chunks start
and end) and retrieval needs the names and imports; one query run over one parse
gives all three.

Example::

    >>> parsed = parse_source(load_languages()["python"], "from .shapes import Circle as C\\n\\ndef area(r):\\n    return C(r).area()\\n")
    >>> [(d.kind, d.name, d.name_line) for d in parsed.definitions]
    [('function', 'area', 2)]
    >>> parsed.imports
    (Import(module='.shapes', name='Circle', alias='C', wildcard=False, line=0, binding='C'),)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import tree_sitter

from context.languages import LanguageSpec, load_languages

__all__ = ["Symbol", "Import", "DefinitionNode", "ParsedFile", "parse_source", "expand_rust_use", "load_languages"]


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


def _rust_imports(path_node: tree_sitter.Node, line: int) -> list[Import]:
    imports = []
    for segments, alias, wildcard in expand_rust_use(_text(path_node)):
        if wildcard:
            imports.append(Import("::".join(segments), None, None, True, line, None))
        elif segments:
            module, name = "::".join(segments[:-1]), segments[-1]
            imports.append(Import(module, name, alias, False, line, alias or name))
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
            line = statement.start_point[0]
            if "import.path" in captures:
                imports += _rust_imports(captures["import.path"][0], line)
                continue
            module = _text(captures["import.module"][0]) if "import.module" in captures else ""
            wildcard = "import.wildcard" in captures
            if "import.default" in captures:  # JS default import: bound name, the module's default export
                alias = _text(captures["import.default"][0])
                imports.append(Import(module, "default", alias, False, line, alias))
                continue
            name = _text(captures["import.name"][0]) if "import.name" in captures else None
            alias = _text(captures["import.alias"][0]) if "import.alias" in captures else None
            imports.append(Import(module, name, alias, wildcard, line, _binding(spec, module, name, alias, wildcard)))
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
    definitions = _drop_local_definitions(spec, list(found.values()))
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
