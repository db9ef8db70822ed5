"""Which language a file is in, and its tree-sitter grammar and queries (all from data).

Why data: adding a language, or teaching one a new kind of definition, must be an
edit to ``languages.toml`` and ``queries/<lang>.scm``, not to the chunker or the
retriever. The code below only loads and caches what those files say.

Query capture names (the contract between ``queries/*.scm`` and ``symbols.py``):

* ``@definition.<kind>`` on a node that defines something, with ``@name`` on its
  name (``@container`` optionally names the type a Go method belongs to). Kinds are
  free words (``function``, ``class``, ``method``, ``impl`` ...); the language's
  ``containers`` and ``symbol_only`` lists in the table say how the chunker treats
  them.
* ``@import`` on an import statement, one query match per imported name, with
  ``@import.module`` (the module string as written, quotes stripped),
  ``@import.name`` / ``@import.alias`` / ``@import.default`` / ``@import.wildcard``,
  or ``@import.path`` when the whole path must be expanded in code (Rust use trees).
* ``@package`` on a package clause (Go, Java).

Example::

    >>> spec = language_for_path("pkg/shapes.py")
    >>> spec.name, spec.line_comment
    ('python', '#')
    >>> language_for_path("README.md") is None
    True
"""

from __future__ import annotations

import importlib
import threading
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path, PurePosixPath

import tree_sitter

TABLE_PATH = Path(__file__).with_name("languages.toml")
QUERIES_DIR = Path(__file__).with_name("queries")


@dataclass(frozen=True)
class LanguageSpec:
    """One row of ``languages.toml``."""

    name: str
    extensions: tuple[str, ...]
    grammar: str
    grammar_function: str
    query: str
    line_comment: str
    resolver: str
    containers: frozenset[str]
    symbol_only: frozenset[str]
    comment_nodes: frozenset[str]
    keywords: frozenset[str]
    same_package: bool
    _local: threading.local = field(default_factory=threading.local, compare=False, repr=False)

    @property
    def language(self) -> tree_sitter.Language:
        return _load_language(self.grammar, self.grammar_function)

    @property
    def query_object(self) -> tree_sitter.Query:
        return _load_query(self.grammar, self.grammar_function, self.query)

    def parser(self) -> tree_sitter.Parser:
        """A parser for this language, one per thread (tree-sitter parsers are not shareable)."""
        parser = getattr(self._local, "parser", None)
        if parser is None:
            parser = tree_sitter.Parser(self.language)
            self._local.parser = parser
        return parser


@cache
def _load_language(module: str, function: str) -> tree_sitter.Language:
    return tree_sitter.Language(getattr(importlib.import_module(module), function)())


@cache
def _load_query(module: str, function: str, query_file: str) -> tree_sitter.Query:
    source = (QUERIES_DIR / query_file).read_text(encoding="utf-8")
    return tree_sitter.Query(_load_language(module, function), source)


@cache
def load_languages(path: Path = TABLE_PATH) -> dict[str, LanguageSpec]:
    """All languages of the table, by name."""
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    specs = {}
    for name, row in raw.items():
        specs[name] = LanguageSpec(
            name=name,
            extensions=tuple(row["extensions"]),
            grammar=row["grammar"],
            grammar_function=row.get("grammar_function", "language"),
            query=row["query"],
            line_comment=row["line_comment"],
            resolver=row["resolver"],
            containers=frozenset(row.get("containers", [])),
            symbol_only=frozenset(row.get("symbol_only", [])),
            comment_nodes=frozenset(row.get("comment_nodes", [])),
            keywords=frozenset(word.lower() for word in row.get("keywords", [])),
            same_package=bool(row.get("same_package", False)),
        )
    return specs


@cache
def _by_extension() -> dict[str, LanguageSpec]:
    table: dict[str, LanguageSpec] = {}
    for spec in load_languages().values():
        for extension in spec.extensions:
            assert extension not in table, f"extension {extension} listed twice in languages.toml"
            table[extension] = spec
    return table


def language_for_path(path: str | PurePosixPath | Path) -> LanguageSpec | None:
    """The language of a file, from its name; ``None`` when context/ does not read it."""
    suffix = PurePosixPath(str(path)).suffix.lower()
    return _by_extension().get(suffix)


def supported_extensions() -> frozenset[str]:
    return frozenset(_by_extension())
