"""Saving and loading a ``RepoIndex``: on disk by default, in Redis when configured.

Why a container with a checksum: an index file is written while the editor runs
and read at the next start; a crash mid-write, a full disk or a copy that lost
its tail must never produce a half index that silently answers wrong. So:

* the file is written to a temporary name in the same directory, flushed,
  fsynced and renamed over the old one (rename is atomic on POSIX);
* it starts with a magic, the format version, the payload length and the
  payload's sha256; ``loads`` checks all four before parsing anything, and any
  mismatch raises ``CorruptIndexError`` — the caller rebuilds;
* Redis holds the very same bytes under ``livefim:index:v<FORMAT>:<repo hash>``,
  so a team can share one index (a ``SET`` is atomic too).

Layout of the bytes::

    b"LFIMIDX\\0" | u32 format | u64 payload length | 32-byte sha256(payload) | payload
    payload = zlib(JSON header line + "\\n" + raw numpy sections named in the header)

Example::

    >>> import tempfile
    >>> from context.index import build_index
    >>> root = Path(tempfile.mkdtemp())
    >>> _ = (root / "a.py").write_text("def f():\\n    return 1\\n")
    >>> store = DiskStore(Path(tempfile.mkdtemp()))
    >>> store.save(build_index(root))
    >>> loaded = store.load(root)
    >>> [r.path for r in loaded.definitions("f")]
    ['a.py']
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from context.bm25 import BM25Index
from context.chunks import Chunk, ChunkOptions
from context.index import FileEntry, IndexOptions, Progress, RepoIndex, build_index
from context.symbols import Import, Symbol

FORMAT_VERSION = 1
MAGIC = b"LFIMIDX\0"
_HEADER = struct.Struct("<8sIQ32s")
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


class CorruptIndexError(ValueError):
    """The stored bytes are not a complete index of this format (truncated, altered, other version)."""


def cache_root() -> Path:
    """``$LIVEFIM_HOME`` or ``~/.cache/livefim`` (the same rule as ``engine/install.py``)."""
    return Path(os.environ.get("LIVEFIM_HOME") or Path.home() / ".cache" / "livefim")


def repo_key(repo: Path) -> str:
    """A stable short name for a repository: the sha256 of its resolved path, 16 hex digits."""
    return hashlib.sha256(str(Path(repo).resolve()).encode("utf-8")).hexdigest()[:16]


# --- bytes <-> index -----------------------------------------------------------------


def dumps(index: RepoIndex) -> bytes:
    """The whole index as bytes (see the module docstring for the layout)."""
    with index.lock:
        vocab, doc_ids, offsets, term_ids, tfs = index.bm25.export_arrays()
        files = []
        for entry in index.files.values():
            files.append({
                "path": entry.path,
                "language": entry.language,
                "size": entry.size,
                "mtime_ns": entry.mtime_ns,
                "package": entry.package,
                "imports": [[i.module, i.name, i.alias, i.wildcard, i.line, i.binding, i.end_line] for i in entry.imports],
                "usages": {chain: list(lines) for chain, lines in entry.usages.items()},
                "chunks": [
                    [
                        chunk_id,
                        index.chunks[chunk_id].start_line,
                        index.chunks[chunk_id].end_line,
                        index.chunks[chunk_id].kind,
                        index.chunks[chunk_id].text,
                        [[s.name, s.kind, s.line, s.container] for s in index.chunks[chunk_id].symbols],
                    ]
                    for chunk_id in entry.chunk_ids
                ],
            })
        sections = {"doc_ids": doc_ids.astype("<i4"), "offsets": offsets.astype("<i8"),
                    "term_ids": term_ids.astype("<i4"), "tfs": tfs.astype("<i4")}
        header = {
            "format": FORMAT_VERSION,
            "root": str(index.root),
            "next_chunk_id": index._next_chunk_id,
            "chunk_options": vars(index.options.chunks),
            "max_file_bytes": index.options.max_file_bytes,
            "vocab": vocab,
            "files": files,
            "sections": [[name, array.dtype.str, int(array.size)] for name, array in sections.items()],
        }
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8") + b"\n" + b"".join(a.tobytes() for a in sections.values())
    payload = zlib.compress(raw, 3)
    return _HEADER.pack(MAGIC, FORMAT_VERSION, len(payload), hashlib.sha256(payload).digest()) + payload


def loads(data: bytes, root: Path | None = None) -> RepoIndex:
    """An index from ``dumps`` bytes; ``root`` overrides the stored root (an index shared via Redis).

    Raises ``CorruptIndexError`` unless the bytes are complete, unaltered and of this format.
    """
    if len(data) < _HEADER.size:
        raise CorruptIndexError(f"truncated: {len(data)} bytes, shorter than the header")
    magic, version, length, digest = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CorruptIndexError("not a livefim index (bad magic)")
    if version != FORMAT_VERSION:
        raise CorruptIndexError(f"format version {version}, this livefim reads {FORMAT_VERSION}")
    payload = data[_HEADER.size :]
    if len(payload) != length:
        raise CorruptIndexError(f"truncated: payload is {len(payload)} bytes, header says {length}")
    if hashlib.sha256(payload).digest() != digest:
        raise CorruptIndexError("checksum mismatch")
    try:
        raw = zlib.decompress(payload)
        newline = raw.index(b"\n")
        header = json.loads(raw[:newline])
        arrays: dict[str, np.ndarray] = {}
        position = newline + 1
        for name, dtype, size in header["sections"]:
            array = np.frombuffer(raw, dtype=np.dtype(dtype), count=size, offset=position)
            arrays[name] = array.astype(array.dtype.newbyteorder("="))
            position += array.nbytes
        if position != len(raw):
            raise CorruptIndexError("payload sections do not add up")
        return _build(header, arrays, root)
    except CorruptIndexError:
        raise
    except (ValueError, KeyError, TypeError, IndexError, zlib.error) as error:
        # The checksum matched, so this is a writer bug or a foreign file: still never half-read.
        raise CorruptIndexError(f"unreadable payload: {error}") from error


def _build(header: dict, arrays: dict[str, np.ndarray], root: Path | None) -> RepoIndex:
    options = IndexOptions(max_file_bytes=header["max_file_bytes"], chunks=ChunkOptions(**header["chunk_options"]))
    index = RepoIndex(Path(root) if root is not None else Path(header["root"]), options)
    for record in header["files"]:
        chunk_ids = []
        for chunk_id, start, end, kind, text, symbols in record["chunks"]:
            chunk = Chunk(record["path"], start, end, text, kind, tuple(Symbol(*s) for s in symbols))
            index.chunks[chunk_id] = chunk
            chunk_ids.append(chunk_id)
        imports = tuple(Import(*i) for i in record["imports"])
        usages = {chain: tuple(lines) for chain, lines in record["usages"].items()}
        entry = FileEntry(record["path"], record["language"], record["size"], record["mtime_ns"],
                          tuple(chunk_ids), imports, record["package"], usages)
        index._register(entry)
    index._next_chunk_id = header["next_chunk_id"]
    index.bm25 = BM25Index.from_arrays(header["vocab"], arrays["doc_ids"], arrays["offsets"], arrays["term_ids"], arrays["tfs"])
    missing = [cid for cid in index.bm25._doc_terms if cid not in index.chunks]
    if missing:
        raise CorruptIndexError(f"{len(missing)} BM25 documents have no chunk")
    return index


# --- stores --------------------------------------------------------------------------


class IndexStore(Protocol):
    """Where indexes live between runs."""

    def save(self, index: RepoIndex) -> None: ...

    def load(self, repo: Path) -> RepoIndex | None:
        """The stored index of ``repo``; None when there is none. Raises ``CorruptIndexError``."""
        ...

    def location(self, repo: Path) -> str: ...


@dataclass
class DiskStore:
    """``<root>/<repo hash>/index.lfi`` with ``root`` = ``cache_root()/index`` by default."""

    root: Path | None = None

    def directory(self, repo: Path) -> Path:
        return (self.root or cache_root() / "index") / repo_key(repo)

    def location(self, repo: Path) -> str:
        return str(self.directory(repo) / "index.lfi")

    def save(self, index: RepoIndex) -> None:
        data = dumps(index)
        directory = self.directory(index.root)
        directory.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(prefix=".index-", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(descriptor, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, directory / "index.lfi")
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        (directory / "repo.txt").write_text(str(index.root) + "\n", encoding="utf-8")

    def load(self, repo: Path) -> RepoIndex | None:
        path = self.directory(repo) / "index.lfi"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        return loads(data, Path(repo).resolve())


@dataclass
class RedisStore:
    """The same bytes in Redis, one key per repository (``redis-py``)."""

    url: str = DEFAULT_REDIS_URL
    prefix: str = "livefim:index"

    def __post_init__(self) -> None:
        import redis

        self._client = redis.Redis.from_url(self.url, socket_connect_timeout=2, socket_timeout=30)

    def ping(self) -> None:
        """Raises ``redis.RedisError`` when the server cannot be reached."""
        self._client.ping()

    def key(self, repo: Path) -> str:
        return f"{self.prefix}:v{FORMAT_VERSION}:{repo_key(repo)}"

    def location(self, repo: Path) -> str:
        return f"{self.url} {self.key(repo)}"

    def save(self, index: RepoIndex) -> None:
        self._client.set(self.key(index.root), dumps(index))

    def load(self, repo: Path) -> RepoIndex | None:
        data = self._client.get(self.key(repo))
        if data is None:
            return None
        return loads(bytes(data), Path(repo).resolve())

    def delete(self, repo: Path) -> None:
        self._client.delete(self.key(repo))


@dataclass(frozen=True)
class LoadOutcome:
    """How ``load_or_build`` got its index: "loaded", "built" or "rebuilt" (with why)."""

    status: str
    detail: str = ""
    files_parsed: int = 0


def load_or_build(
    repo: Path, store: IndexStore | None = None, progress: Progress | None = None, options: IndexOptions = IndexOptions()
) -> tuple[RepoIndex, LoadOutcome]:
    """The stored index brought up to date with the disk, or a fresh one; saved when anything changed.

    A stored index that fails its checks is reported and rebuilt from scratch,
    never used in part.
    """
    store = store if store is not None else DiskStore()
    repo = Path(repo).resolve()
    try:
        index = store.load(repo)
        problem = ""
    except CorruptIndexError as error:
        index, problem = None, str(error)
    if index is None:
        index = build_index(repo, progress, options)
        store.save(index)
        status = "rebuilt" if problem else "built"
        return index, LoadOutcome(status, problem, index.last_report.files_parsed if index.last_report else 0)
    report = index.refresh(progress)
    if report.files_parsed or report.files_removed:
        store.save(index)
    return index, LoadOutcome("loaded", f"{report.files_parsed} changed, {report.files_removed} removed", report.files_parsed)
