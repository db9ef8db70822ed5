"""The repository index: chunks, symbol table, module tables and BM25, kept current file by file.

Why one object: retrieval needs four views of the same chunks (by id, by defined
name, by module path, by lexical terms) and the engine changes one file at a time
(``update_file`` on every save or edit). Keeping the views in one class with one
lock makes an update atomic for readers: a retrieval never sees a file's old
chunks in BM25 and its new ones in the symbol table.

Example::

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> _ = (root / "shapes.py").write_text("class Circle:\\n    def __init__(self, r):\\n        self.r = r\\n")
    >>> index = build_index(root)
    >>> [(ref.path, ref.symbol.line) for ref in index.definitions("Circle")]
    [('shapes.py', 0)]
    >>> index.update_file("shapes.py", "class Square:\\n    def __init__(self, s):\\n        self.s = s\\n")
    True
    >>> index.definitions("Circle"), [r.path for r in index.definitions("Square")]
    ([], ['shapes.py'])
"""

from __future__ import annotations

import posixpath
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from context.bm25 import BM25Index, term_counts
from context.chunks import Chunk, ChunkOptions, chunk_parsed
from context.languages import language_for_path, supported_extensions
from context.symbols import Import, Symbol, import_usages, parse_source, split_chain
from context.walk import DEFAULT_MAX_FILE_BYTES, is_ignored, read_source, walk_repo

Progress = Callable[[int, int], None]  # (files done, files total)


@dataclass(frozen=True)
class IndexOptions:
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    chunks: ChunkOptions = ChunkOptions()


@dataclass(frozen=True)
class FileEntry:
    """One indexed file. ``mtime_ns`` is -1 when the text came from an editor, not from disk."""

    path: str
    language: str
    size: int
    mtime_ns: int
    chunk_ids: tuple[int, ...]
    imports: tuple[Import, ...]
    package: str | None
    usages: dict[str, tuple[int, ...]] = field(default_factory=dict, compare=False)  # imported chain -> lines


@dataclass(frozen=True)
class SymbolRef:
    """Where a name is defined: the chunk that holds it, and the symbol itself."""

    chunk_id: int
    path: str
    symbol: Symbol


@dataclass
class RefreshReport:
    """What a build or refresh did; ``skipped`` counts files by reason (huge, binary, ...)."""

    files_seen: int = 0
    files_parsed: int = 0
    files_removed: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0


def python_module_names(path: str, package_prefix: str = "") -> list[str]:
    """Every dotted name a Python file may be imported by, longest first.

    >>> python_module_names("src/pkg/sub/__init__.py")
    ['src.pkg.sub', 'pkg.sub', 'sub']
    >>> python_module_names("mod.py", package_prefix="email")
    ['email.mod', 'mod']
    """
    parts = list(PurePosixPath(path).with_suffix("").parts)
    if parts and parts[-1] == "__init__":
        parts.pop()
    if package_prefix:
        parts.insert(0, package_prefix)
    if not parts or not all(p.isidentifier() for p in parts[-1:]):
        return []
    return [".".join(parts[i:]) for i in range(len(parts))]


class RepoIndex:
    """All context the retriever needs about one repository, mutable one file at a time."""

    def __init__(self, root: Path, options: IndexOptions = IndexOptions()) -> None:
        self.root = Path(root).resolve()
        self.name = self.root.name
        self.options = options
        self.files: dict[str, FileEntry] = {}
        self.chunks: dict[int, Chunk] = {}
        self.bm25 = BM25Index()
        self.lock = threading.RLock()
        self.generation = 0  # bumped on every change; caches keyed on it
        self.resolution_cache: dict[object, object] = {}
        self._next_chunk_id = 0
        self.last_report: RefreshReport | None = None
        self._symbols: dict[str, dict[str, list[SymbolRef]]] = {}  # name -> path -> refs
        self._file_symbols: dict[str, dict[str, list[SymbolRef]]] = {}
        self._python_modules: dict[str, set[str]] = {}
        self._dirs: dict[str, set[str]] = {}
        self._attribute_files: Counter[str] = Counter()  # name -> files that use it as `x.name`
        # A repository whose root is itself a package (has __init__.py) imports as its own name.
        self._package_prefix = self.name if (self.root / "__init__.py").is_file() and self.name.isidentifier() else ""

    # --- reading -------------------------------------------------------------------

    def relative(self, path: str | Path) -> str | None:
        """The index key (posix, relative to the root) of a path or file URI; None when outside."""
        text = str(path)
        if text.startswith("file://"):
            from urllib.parse import unquote, urlparse

            text = unquote(urlparse(text).path)
        candidate = Path(text)
        if not candidate.is_absolute():
            rel = posixpath.normpath(text.replace("\\", "/"))
            return None if rel == ".." or rel.startswith("../") else rel
        try:
            return candidate.resolve().relative_to(self.root).as_posix()
        except ValueError:
            return None

    def definitions(self, name: str) -> list[SymbolRef]:
        """Every indexed definition of ``name`` in the repository."""
        return [ref for refs in self._symbols.get(name, {}).values() for ref in refs]

    def definition_count(self, name: str) -> int:
        return sum(len(refs) for refs in self._symbols.get(name, {}).values())

    def file_definitions(self, path: str, name: str) -> list[SymbolRef]:
        return list(self._file_symbols.get(path, {}).get(name, ()))

    def file_names(self, path: str) -> dict[str, list[SymbolRef]]:
        return self._file_symbols.get(path, {})

    def chunks_of(self, path: str) -> list[Chunk]:
        entry = self.files.get(path)
        return [self.chunks[i] for i in entry.chunk_ids] if entry else []

    def python_module_files(self, dotted: str) -> set[str]:
        return self._python_modules.get(dotted, set())

    def dir_files(self, directory: str) -> set[str]:
        return self._dirs.get(directory, set())

    def has_directory(self, directory: str) -> bool:
        return directory in self._dirs

    def directories(self) -> Iterable[str]:
        return self._dirs.keys()

    def attribute_popularity(self, name: str) -> int:
        """How many files use ``name`` as an attribute of an imported name (``events.name``)."""
        return self._attribute_files.get(name, 0)

    def stats(self) -> dict[str, int]:
        return {"files": len(self.files), "chunks": len(self.chunks), "names": len(self._symbols), "terms": len(self.bm25.vocab)}

    # --- writing -------------------------------------------------------------------

    def update_file(self, path: str | Path, text: str | None) -> bool:
        """Re-index one file from ``text`` (the editor's buffer), or drop it when ``text`` is None.

        Returns whether the index changed. Files outside the root, in an unsupported
        language, vendored, git-ignored or over the size limit are not indexed.
        """
        rel = self.relative(path)
        if rel is None:
            return False
        with self.lock:
            if text is None:
                if rel not in self.files:
                    return False
                self._remove(rel)
                self._changed()
                return True
            spec = language_for_path(rel)
            if spec is None or is_ignored(self.root, rel):
                return False
            size = len(text.encode("utf-8"))
            if size > self.options.max_file_bytes:
                changed = rel in self.files
                self._remove(rel)
                self._changed()
                return changed
            self._remove(rel)
            self._add(rel, text, size, -1)
            self._changed()
            return True

    def refresh(self, progress: Progress | None = None) -> RefreshReport:
        """Bring the index in line with the disk: parse new and changed files, drop deleted ones.

        A file is unchanged when its size and mtime match what was indexed, so a
        refresh of an unchanged repository only walks and stats.
        """
        started = time.perf_counter()
        report = RefreshReport()
        walked = walk_repo(self.root, supported_extensions(), self.options.max_file_bytes)
        report.skipped.update(walked.skipped)
        report.files_seen = len(walked.files)
        seen = {f.path for f in walked.files}
        total = len(walked.files)
        with self.lock:
            self.bm25.begin_bulk()
            try:
                for gone in [p for p in self.files if p not in seen]:
                    self._remove(gone)
                    report.files_removed += 1
                for done, walked_file in enumerate(walked.files, 1):
                    entry = self.files.get(walked_file.path)
                    if entry is None or (entry.size, entry.mtime_ns) != (walked_file.size, walked_file.mtime_ns):
                        text, why = read_source(walked_file.absolute, self.options.max_file_bytes)
                        self._remove(walked_file.path)
                        if text is None:
                            report.skipped[why] += 1
                        else:
                            self._add(walked_file.path, text, walked_file.size, walked_file.mtime_ns)
                            report.files_parsed += 1
                    if progress is not None:
                        progress(done, total)
            finally:
                self.bm25.end_bulk()
            self._changed()
        report.seconds = time.perf_counter() - started
        self.last_report = report
        return report

    def _changed(self) -> None:
        self.generation += 1
        self.resolution_cache.clear()

    def _add(self, rel: str, text: str, size: int, mtime_ns: int) -> None:
        spec = language_for_path(rel)
        assert spec is not None, rel
        parsed = parse_source(spec, text)
        file_chunks = chunk_parsed(rel, text, spec, parsed, self.options.chunks)
        ids = []
        for chunk in file_chunks.chunks:
            ids.append(self._add_chunk(chunk, spec.keywords))
        usages = import_usages(text, file_chunks.imports)
        self._register(
            FileEntry(rel, spec.name, size, mtime_ns, tuple(ids), file_chunks.imports, file_chunks.package, usages)
        )

    def _add_chunk(self, chunk: Chunk, stop_words: frozenset[str], chunk_id: int | None = None,
                   counts: Counter[str] | None = None) -> int:
        if chunk_id is None:
            chunk_id = self._next_chunk_id
        self._next_chunk_id = max(self._next_chunk_id, chunk_id + 1)
        self.chunks[chunk_id] = chunk
        if counts is not None:
            self.bm25.add(chunk_id, counts)
        elif chunk.kind != "imports":
            self.bm25.add(chunk_id, chunk_terms(chunk, stop_words))
        return chunk_id

    def _register(self, entry: FileEntry) -> None:
        """Add a file's entry to the symbol, module and directory tables (its chunks are in place)."""
        rel = entry.path
        self.files[rel] = entry
        names: dict[str, list[SymbolRef]] = {}
        for chunk_id in entry.chunk_ids:
            for symbol in self.chunks[chunk_id].symbols:
                ref = SymbolRef(chunk_id, rel, symbol)
                names.setdefault(symbol.name, []).append(ref)
        for name, refs in names.items():
            self._symbols.setdefault(name, {})[rel] = refs
        self._file_symbols[rel] = names
        self._attribute_files.update(_attributes_used(entry))
        directory = PurePosixPath(rel).parent.as_posix()
        self._dirs.setdefault("" if directory == "." else directory, set()).add(rel)
        if entry.language == "python":
            for dotted in python_module_names(rel, self._package_prefix):
                self._python_modules.setdefault(dotted, set()).add(rel)

    def _remove(self, rel: str) -> None:
        entry = self.files.pop(rel, None)
        if entry is None:
            return
        self._attribute_files.subtract(_attributes_used(entry))
        for name in self._file_symbols.pop(rel, {}):
            by_path = self._symbols.get(name)
            if by_path is not None:
                by_path.pop(rel, None)
                if not by_path:
                    del self._symbols[name]
        for chunk_id in entry.chunk_ids:
            self.chunks.pop(chunk_id, None)
            self.bm25.remove(chunk_id)
        directory = PurePosixPath(rel).parent.as_posix()
        directory = "" if directory == "." else directory
        siblings = self._dirs.get(directory)
        if siblings is not None:
            siblings.discard(rel)
            if not siblings:
                del self._dirs[directory]
        if entry.language == "python":
            for dotted in python_module_names(rel, self._package_prefix):
                holders = self._python_modules.get(dotted)
                if holders is not None:
                    holders.discard(rel)
                    if not holders:
                        del self._python_modules[dotted]


def _attributes_used(entry: FileEntry) -> set[str]:
    return {split_chain(chain)[-1] for chain in entry.usages if len(split_chain(chain)) > 1}


def chunk_terms(chunk: Chunk, stop_words: frozenset[str]) -> Counter[str]:
    """BM25 terms of a chunk: its identifiers' parts plus the file name's (``email/utils.py`` adds ``utils``)."""
    counts = term_counts(chunk.text, stop_words)
    for term in term_counts(PurePosixPath(chunk.path).stem):
        counts[term] += 1
    return counts


def build_index(repo: Path, progress: Progress | None = None, options: IndexOptions = IndexOptions()) -> RepoIndex:
    """Walk ``repo`` and index every supported file (see ``RepoIndex.refresh``).

    ``progress(done, total)`` is called after each file; ``index.last_report`` says
    what was parsed and skipped.
    """
    index = RepoIndex(repo, options)
    index.refresh(progress)
    return index
