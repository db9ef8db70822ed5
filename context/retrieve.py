"""Cross-file context for one cursor: definitions of the names near it, plus lexical neighbours.

Why several rankings: the line being written mostly calls or extends names that
are already on screen — ``Circle(`` two lines up was imported from ``shapes.py``, so
the model needs ``class Circle``'s signature; import resolution finds those
exactly. Lexical similarity (BM25 over identifier parts) finds what no import
names: a sibling implementation of the same pattern, the other half of a protocol.
The ranked lists, each a vote:

1. ``definition`` — names within ``names_before``/``names_after`` lines of the
   cursor, resolved through the file's imports (then same-package files for Go
   and Java, then a unique type-like name anywhere), nearest first;
2. ``imported`` — other imported names the file uses (nearest and most used
   first, from the index's per-file usage map) and imported names not used yet
   (a fresh import is about to be used);
3. ``local`` — the current file's own definitions outside the visible window;
4. ``popular`` — for imported modules (``events``), their likeliest next names:
   most used by the rest of the repository (``events.get_running_loop``), already
   used by this file, or sharing words with the lines around the cursor;
5. ``bm25`` over all chunks and ``bm25-imports`` over the chunks of the files this
   file imports, with the lines around the cursor as the query.

They are fused by weighted reciprocal rank (``w / (k + rank)``, summed over the
lists a chunk appears in; each list counts a chunk once), with definition and
import votes weighted so a resolved definition outranks lexical-only hits. Then:
one entry per chunk, at most ``per_file`` chunks from any file, and nothing from
the current file's visible window (the model already sees it). Weights were set
on the cross-file next-line tasks of ``evals/repo_tasks.py`` (recall@5, seeds 0-4)
and checked on seeds 10-14, which nothing was tuned on.

Outline: the chunks above hold the definition a module-attribute line uses
(``_base.Future()``) only about 60% of the time at rank 5, because which of a
module's names comes next is rarely clear from the cursor. So the result also
carries ``outline``: the signature lines of the likeliest ``outline_names``
names of the ``outline_modules`` nearest imported modules (ranked as for
``popular``), for the prompt's outline budget (``context.outline``).

Skip signal: retrieval costs prompt tokens, and prefill is the expensive part on a
CPU (about 1 s per 100-200 tokens here), so a request whose cursor names nothing
from other files (``external_names == 0``), whose file imports nothing from the
repository that it has not used yet (``unused_imports == 0``: a fresh import is
about to be used) and whose best lexical match is weak (``bm25_top`` below
``skip_min_bm25``: the share of the query's idf the best chunk covers) is marked
``skip``. The numbers are returned so the threshold can be measured.

Example::

    >>> import tempfile
    >>> from pathlib import Path
    >>> from context.index import build_index
    >>> root = Path(tempfile.mkdtemp())
    >>> _ = (root / "shapes.py").write_text("class Circle:\\n    def __init__(self, r):\\n        self.r = r\\n")
    >>> _ = (root / "app.py").write_text("from shapes import Circle\\n\\nc = Circle(2)\\n")
    >>> result = retrieve(build_index(root), "app.py", "from shapes import Circle\\n\\nc = Circle(2)\\n", "")
    >>> [(c.path, c.start_line, c.reason) for c in result.chunks], result.external_names, result.skip
    ([('shapes.py', 0, 'definition:Circle+imported:Circle+bm25+bm25-imports')], 1, False)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from context.bm25 import split_identifiers
from context.index import RepoIndex, SymbolRef
from context.languages import LanguageSpec, language_for_path
from context.outline import outline
from context.resolve import (
    Target,
    lookup_in_files,
    module_files,
    resolve_attribute,
    resolve_import,
    same_package_definitions,
)
from context.symbols import CHAIN, Import, split_chain



@dataclass(frozen=True)
class RetrievedChunk:
    """One piece of context: lines ``[start_line, end_line)`` (0-based) of ``path``."""

    path: str
    start_line: int
    end_line: int
    text: str
    score: float
    reason: str  # "definition:Name", "bm25", "definition:Name+bm25", "imported:Name", ...
    chunk_id: int = -1
    cut: bool = False  # only the chunk's first lines (context.assemble.chunk_head); the prompt elides the rest


@dataclass(frozen=True)
class RetrievalOptions:
    max_chunks: int = 8
    per_file: int = 5  # a module the line draws on (`_base.`) often holds the top 4-5 definitions: 3 cut them off
    names_before: int = 15  # prefix lines whose names are "near the cursor"
    names_after: int = 5  # suffix lines likewise
    scan_before: int = 120  # prefix lines searched for other uses of imported names
    scan_after: int = 40
    query_before: int = 20  # lines that make the BM25 query
    query_after: int = 10
    visible_before: int = 120  # current-file lines assumed in the prompt (when not given)
    visible_after: int = 40
    bm25_candidates: int = 24
    definition_weight: float = 1.5
    imported_weight: float = 3.0  # imported names used elsewhere in the file, or imported but unused
    local_weight: float = 0.5  # current-file definitions outside the visible window
    bm25_weight: float = 1.0
    bm25_imports_weight: float = 1.0  # BM25 among the chunks of the files this file imports
    popular_weight: float = 1.0  # most used names of a module whose name is near the cursor
    popular_per_module: int = 8
    popular_modules: int = 2  # nearest imported modules considered
    popular_distance_scale: float = 0.1  # a module's distance in lines, against a name's popularity rank
    attribute_bm25_weight: float = 2.0  # a module attribute's score: log(1 + popularity) + this × BM25 share
    attribute_use_weight: float = 3.0  # ... + this × log(1 + uses in this file)
    attribute_private_penalty: float = 0.3  # ... − this for a _private name
    outline_names: int = 32  # signature lines of the nearest modules' likeliest names (context.outline); 0: none
    outline_modules: int = 3
    rrf_k: float = 10.0
    unused_import_distance: float = 1.0  # where an imported-but-unused name ranks among used ones
    skip_min_bm25: float = 0.35
    global_fallback_max: int = 2  # an unimported name defined at most this often is looked up globally


@dataclass(frozen=True)
class RetrievalResult:
    chunks: tuple[RetrievedChunk, ...]
    skip: bool
    external_names: int  # names near the cursor that resolved to another file
    bm25_top: float  # best BM25 score / query idf mass (0 when nothing matched)
    elapsed_ms: float
    unused_imports: int = 0  # repository names this file imports but does not use yet
    outline: tuple[RetrievedChunk, ...] = ()  # signature lines of likely module attributes, likeliest first


class Retriever(Protocol):
    """What the engine calls: context for a cursor in ``path``."""

    def retrieve(self, path: str, prefix: str, suffix: str, visible_lines: tuple[int, int] | None = None) -> RetrievalResult: ...


@dataclass
class RepoRetriever:
    """The ``Retriever`` over one ``RepoIndex``."""

    index: RepoIndex
    options: RetrievalOptions = RetrievalOptions()

    def retrieve(self, path: str, prefix: str, suffix: str, visible_lines: tuple[int, int] | None = None) -> RetrievalResult:
        return retrieve(self.index, path, prefix, suffix, self.options, visible_lines)


def _chains_by_distance(
    prefix_lines: list[str], suffix_lines: list[str], near_before: int, near_after: int,
    cursor_line: int = 0, skip_lines: set[int] = frozenset(),  # type: ignore[assignment]
) -> dict[str, tuple[float, bool]]:
    """Each identifier chain (``a.b.c`` / ``a::b``) -> (distance in lines from the cursor, near?).

    Suffix lines count half a line farther than prefix lines at the same distance:
    what is above the cursor is more often what the next line continues. Import
    statements (``skip_lines``, absolute line numbers) are not uses.
    """
    found: dict[str, tuple[float, bool]] = {}
    last = len(prefix_lines) - 1
    for index in range(last, -1, -1):
        if cursor_line - (last - index) in skip_lines:
            continue
        for match in reversed(CHAIN.findall(prefix_lines[index])):
            if match not in found:
                found[match] = (float(last - index), last - index < near_before)
    for index, line in enumerate(suffix_lines):
        if index and cursor_line + index in skip_lines:
            continue
        for match in CHAIN.findall(line):
            if match not in found:
                found[match] = (index + 0.5, index < near_after)
    return found


@dataclass
class _Scope:
    """The current file as retrieval sees it: its imports by bound name, its own names."""

    index: RepoIndex
    path: str
    spec: LanguageSpec | None
    bindings: dict[str, list[Import]]
    wildcards: list[Import]
    local_names: dict[str, list[SymbolRef]]

    @classmethod
    def of(cls, index: RepoIndex, path: str) -> _Scope:
        entry = index.files.get(path)
        bindings: dict[str, list[Import]] = {}
        wildcards: list[Import] = []
        for imp in entry.imports if entry else ():
            if imp.wildcard:
                wildcards.append(imp)
            elif imp.binding:
                bindings.setdefault(imp.binding, []).append(imp)
        return cls(index, path, language_for_path(path), bindings, wildcards, index.file_names(path))

    def imported_chunk_ids(self) -> list[int]:
        """Chunks of every repository file this file imports from (modules and definitions' files)."""
        key = ("imported-chunks", self.path)
        cached = self.index.resolution_cache.get(key)
        if cached is None:
            files: set[str] = set()
            for imp in [i for imports in self.bindings.values() for i in imports] + self.wildcards:
                files.update(module_files(self.index, self.path, imp.module))
                if imp.name is not None and not imp.wildcard:
                    target = resolve_import(self.index, self.path, imp)
                    files.update(target.modules)
                    files.update(ref.path for ref in target.definitions)
            files.discard(self.path)
            cached = [cid for f in sorted(files) if f in self.index.files for cid in self.index.files[f].chunk_ids]
            self.index.resolution_cache[key] = cached
        return cached  # type: ignore[return-value]

    def head(self, parts: list[str]) -> tuple[Target, int, str]:
        """Target of the chain's head (possibly several parts, for ``import a.b``), parts used, how."""
        head = parts[0]
        imports = self.bindings.get(head)
        if imports:
            if self.spec is not None and self.spec.resolver == "python":
                # import a.b.c binds "a": a chain a.b.c.f means module a.b.c, attribute f.
                for imp in sorted(imports, key=lambda i: -i.module.count(".")):
                    if imp.name is None and imp.alias is None:
                        module_parts = imp.module.split(".")
                        if parts[: len(module_parts)] == module_parts:
                            files = module_files(self.index, self.path, imp.module)
                            return Target(modules=tuple(files)), len(module_parts), "import"
            for imp in imports:
                target = resolve_import(self.index, self.path, imp)
                if target:
                    return target, 1, "import"
            return Target(), 1, "import"
        local = self.local_names.get(head)
        if local:
            return Target(definitions=tuple(local)), 1, "local"
        if self.spec is not None and self.spec.same_package:
            refs = same_package_definitions(self.index, self.path, head)
            if refs:
                return Target(definitions=tuple(refs)), 1, "package"
        for imp in self.wildcards:
            target = lookup_in_files(self.index, module_files(self.index, self.path, imp.module), head)
            if target.definitions:
                return target, 1, "import"
        return Target(), 1, "unknown"

    def resolve(self, chain: str, global_fallback_max: int) -> tuple[list[SymbolRef], str]:
        """Definitions a chain leads to, deepest first (``shapes.Circle.area`` -> area, Circle)."""
        key = ("chain", self.path, chain, global_fallback_max)
        cached = self.index.resolution_cache.get(key)
        if cached is None:
            cached = self._resolve(chain, global_fallback_max)
            self.index.resolution_cache[key] = cached
        return cached  # type: ignore[return-value]

    def _resolve(self, chain: str, global_fallback_max: int) -> tuple[list[SymbolRef], str]:
        parts = split_chain(chain)
        target, used, how = self.head(parts)
        if how == "unknown":
            head = parts[0]
            stop = self.spec.keywords if self.spec else frozenset()
            count = self.index.definition_count(head)
            # Only type-like names: a lowercase unknown name is far more often a local variable.
            if len(head) < 3 or not head[0].isupper() or head.lower() in stop or not 0 < count <= global_fallback_max:
                return [], how
            target, how = Target(definitions=tuple(self.index.definitions(head))), "symbol"
        found: list[SymbolRef] = list(target.definitions)
        for attribute in parts[used:]:
            following = resolve_attribute(self.index, target, attribute)
            if not following:
                break
            target = following
            found = list(following.definitions) + found
        return found, how


def retrieve(
    index: RepoIndex,
    path: str,
    prefix: str,
    suffix: str,
    options: RetrievalOptions = RetrievalOptions(),
    visible_lines: tuple[int, int] | None = None,
) -> RetrievalResult:
    """Rank cross-file chunks for a cursor at the end of ``prefix`` in ``path``.

    ``visible_lines`` is the ``[first, last)`` line range of the current file that
    the prompt already holds; chunks of the current file inside it are never
    returned (default: ``visible_before``/``visible_after`` lines around the cursor).
    """
    started = time.perf_counter()
    with index.lock:
        rel = index.relative(path) or path
        cursor_line = prefix.count("\n")
        if visible_lines is None:
            visible_lines = (cursor_line - options.visible_before, cursor_line + options.visible_after + 1)
        first_visible, end_visible = visible_lines
        entry = index.files.get(rel)
        hidden: set[int] = set()
        if entry is not None:
            for chunk_id in entry.chunk_ids:
                chunk = index.chunks[chunk_id]
                if chunk.start_line < end_visible and chunk.end_line > first_visible:
                    hidden.add(chunk_id)

        # 1. Names near the cursor (and imported names farther up), resolved to definitions.
        prefix_lines = _tail_lines(prefix, options.scan_before)
        suffix_lines = _head_lines(suffix, options.scan_after)
        import_lines = {line for imp in entry.imports for line in imp.lines} if entry is not None else set()
        distances = _chains_by_distance(prefix_lines, suffix_lines, options.names_before, options.names_after,
                                        cursor_line, import_lines)
        scope = _Scope.of(index, rel)
        near: list[tuple[float, int, str]] = []  # (distance, chunk id, name): names near the cursor
        far: list[tuple[float, int, str]] = []  # imported names used farther away (or only imported)
        local: list[tuple[float, int, str]] = []  # current-file definitions outside the visible window
        popular: list[tuple[float, int, str]] = []  # most used names of modules named near the cursor
        external = 0
        for chain, (distance, is_near) in sorted(distances.items(), key=lambda item: item[1][0]):
            if not is_near:
                continue
            refs, how = scope.resolve(chain, options.global_fallback_max)
            refs = [r for r in refs if r.chunk_id not in hidden]
            if not refs:
                continue
            name = split_chain(chain)[-1]
            if how == "local":
                local += [(distance, ref.chunk_id, name) for ref in refs[:3]]
                continue
            if any(r.path != rel for r in refs):
                external += 1
            near += [(distance, ref.chunk_id, name) for ref in refs[:3]]
        # Modules named near the cursor (``events.``): their most used names across the repository.
        # Every imported module counts, nearest use first; one imported but unused ranks as near.
        module_distance: dict[tuple[str, ...], float] = {}
        module_heads: dict[tuple[str, ...], set[str]] = {}
        usage_distance = _usage_distances(entry.usages if entry else {}, cursor_line)
        for binding in scope.bindings:
            target, used, _ = scope.head([binding])
            if target.modules and not target.definitions:
                near_use = distances.get(binding, (float("inf"), False))[0]
                distance = min(near_use, usage_distance.get(binding, options.unused_import_distance))
                module_distance[target.modules] = min(distance, module_distance.get(target.modules, distance))
                module_heads.setdefault(target.modules, set()).add(binding)

        # Imported names used anywhere else in the file (from the index), nearest and most used first;
        # names only imported come last. The cursor's own line does not count: it is being written.
        usages = entry.usages if entry is not None else {}
        used_heads = set()
        for chain, lines in usages.items():
            others = [line for line in lines if line != cursor_line]
            if not others:
                continue
            used_heads.add(split_chain(chain)[0])
            distance = min(abs(line - cursor_line) for line in others) / len(others) ** 0.5
            refs, _ = scope.resolve(chain, 0)
            far += [(distance, ref.chunk_id, split_chain(chain)[-1]) for ref in refs[:2] if ref.chunk_id not in hidden and ref.path != rel]
        # An imported name used nowhere else is about to be used: the likeliest next name of all.
        unused = 0
        for binding in scope.bindings:
            if binding in used_heads:
                continue
            refs, _ = scope.resolve(binding, 0)
            refs = [ref for ref in refs[:1] if ref.chunk_id not in hidden and ref.path != rel]
            unused += bool(refs)
            far += [(options.unused_import_distance, ref.chunk_id, binding) for ref in refs]

        # 2. Lexical neighbours of the text around the cursor: in the whole repository, and in
        #    the files this file imports (the likeliest home of what the next line calls).
        stop_words = scope.spec.keywords if scope.spec else frozenset()
        query_text = "\n".join(prefix_lines[-options.query_before :] + suffix_lines[: options.query_after])
        scores, query_weight = index.bm25.score_all(split_identifiers(query_text, stop_words))
        lexical = index.bm25.top(scores, options.bm25_candidates, hidden)
        imported_chunks = scope.imported_chunk_ids()
        lexical_imported = index.bm25.top(scores, options.bm25_candidates, hidden, imported_chunks) if imported_chunks else []
        bm25_top = lexical[0][1] / query_weight if lexical and query_weight > 0 else 0.0

        # Modules named near the cursor (``events.``): their likeliest next attributes.
        own_attributes = {split_chain(c)[-1] for c in usages if len(split_chain(c)) > 1}
        attributes: list[tuple[float, SymbolRef]] = []  # every ranked attribute, for the outline
        nearest_modules = sorted(module_distance.items(), key=lambda item: item[1])
        for position, (files, distance) in enumerate(nearest_modules[: max(options.popular_modules, options.outline_modules)]):
            head = module_heads[files]
            own_uses = _attribute_uses(usages, head, cursor_line)
            ranked = _likely_attributes(index, files, own_attributes, own_uses, scores, query_weight, options)
            for place, ref in enumerate(ranked):
                if ref.chunk_id in hidden or ref.path == rel:
                    continue
                rank = place + options.popular_distance_scale * distance
                if position < options.outline_modules:
                    attributes.append((rank, ref))
                if position < options.popular_modules and place < options.popular_per_module:
                    popular.append((rank, ref.chunk_id, ref.symbol.name))
        popular.sort()

        # 3. Fuse, de-duplicate, cap per file.
        fused: dict[int, float] = {}
        reasons: dict[int, list[str]] = {}

        def vote(ranking: list[tuple[int, str]], weight: float) -> None:
            """Reciprocal rank fusion: each list counts a chunk once, at its best rank."""
            rank = 0
            counted: set[int] = set()
            for chunk_id, reason in ranking:
                if chunk_id in hidden or chunk_id in counted or chunk_id not in index.chunks:
                    continue
                counted.add(chunk_id)
                fused[chunk_id] = fused.get(chunk_id, 0.0) + weight / (options.rrf_k + rank)
                reasons.setdefault(chunk_id, []).append(reason)
                rank += 1

        vote([(cid, f"definition:{name}") for _, cid, name in sorted(near)], options.definition_weight)
        vote([(cid, f"imported:{name}") for _, cid, name in sorted(far)], options.imported_weight)
        vote([(cid, f"local:{name}") for _, cid, name in sorted(local)], options.local_weight)
        vote([(cid, f"popular:{name}") for _, cid, name in popular], options.popular_weight)
        vote([(cid, "bm25") for cid, _ in lexical], options.bm25_weight)
        vote([(cid, "bm25-imports") for cid, _ in lexical_imported], options.bm25_imports_weight)

        chosen: list[RetrievedChunk] = []
        per_file: dict[str, int] = {}
        for chunk_id, score in sorted(fused.items(), key=lambda item: (-item[1], item[0])):
            chunk = index.chunks[chunk_id]
            if per_file.get(chunk.path, 0) >= options.per_file:
                continue
            per_file[chunk.path] = per_file.get(chunk.path, 0) + 1
            reason = "+".join(dict.fromkeys(reasons[chunk_id]))
            chosen.append(RetrievedChunk(chunk.path, chunk.start_line, chunk.end_line, chunk.text, score, reason, chunk_id))
            if len(chosen) >= options.max_chunks:
                break
        # Chosen chunks are not excluded: the prompt budget may drop them, and assembly skips
        # a signature that a chunk in the prompt already holds.
        signatures = tuple(
            RetrievedChunk(s.path, s.start_line, s.end_line, s.text, -s.rank, f"outline:{s.name}", s.chunk_id)
            for s in outline(index, attributes, hidden, options.outline_names)
        )
        skip = external == 0 and unused == 0 and bm25_top < options.skip_min_bm25
        elapsed = (time.perf_counter() - started) * 1000.0
        return RetrievalResult(tuple(chosen), skip, external, bm25_top, elapsed, unused, signatures)


def _usage_distances(usages: dict[str, tuple[int, ...]], cursor_line: int) -> dict[str, float]:
    """Imported name -> lines to its nearest use in the indexed file (the cursor's line excluded)."""
    out: dict[str, float] = {}
    for chain, lines in usages.items():
        head = split_chain(chain)[0]
        for line in lines:
            if line != cursor_line:
                out[head] = min(out.get(head, float("inf")), float(abs(line - cursor_line)))
    return out


def _attribute_uses(usages: dict[str, tuple[int, ...]], heads: set[str], cursor_line: int) -> dict[str, int]:
    """Attribute -> how often the file uses ``head.attribute`` for one of the module's bound names (cursor line excluded)."""
    uses: dict[str, int] = {}
    for chain, lines in usages.items():
        parts = split_chain(chain)
        if len(parts) > 1 and parts[0] in heads:
            count = sum(1 for line in lines if line != cursor_line)
            if count:
                uses[parts[-1]] = uses.get(parts[-1], 0) + count
    return uses


def _likely_attributes(
    index: RepoIndex,
    files: tuple[str, ...],
    own: set[str],
    own_uses: dict[str, int],
    scores: np.ndarray,
    query_weight: float,
    options: RetrievalOptions,
) -> list[SymbolRef]:
    """Top-level definitions of a module, likeliest next attribute first.

    Why three signals: after ``events.`` the next name is one of the module's
    workhorses (how many other files use it, a prior the index already has), one
    this file already uses (``own_uses``), or one whose definition shares words
    with the lines around the cursor (its chunk's BM25 share of the query).
    Each alone puts the right name in a module's top 5 about half the time; on
    the cross-file tasks of ``evals/repo_tasks.py`` (seeds 0-2) their sum does so
    70% of the time. Names with a leading underscore weigh a little less. The
    current file's own uses do not count towards popularity (its text may hold
    the very line being predicted).
    """
    scored = []
    for path in files:
        for name, refs in index.file_names(path).items():
            top = [r for r in refs if r.symbol.container is None]
            if not top:
                continue
            popularity = max(0, index.attribute_popularity(name) - (1 if name in own else 0))
            lexical = float(scores[top[0].chunk_id]) / query_weight if query_weight > 0 else 0.0
            score = (math.log1p(popularity) + options.attribute_bm25_weight * lexical
                     + options.attribute_use_weight * math.log1p(own_uses.get(name, 0))
                     - options.attribute_private_penalty * name.startswith("_"))
            if score > 0:
                scored.append((-score, name, top[0]))
    scored.sort(key=lambda item: (item[0], item[1]))
    return [ref for _, _, ref in scored]


def _tail_lines(text: str, count: int) -> list[str]:
    """The last ``count`` lines of ``text`` (the last one possibly partial), without scanning all of it."""
    end = len(text)
    position = end
    for _ in range(count):
        position = text.rfind("\n", 0, position)
        if position == -1:
            break
    return text[position + 1 :].split("\n") if position != -1 else text.split("\n")


def _head_lines(text: str, count: int) -> list[str]:
    position = -1
    for _ in range(count):
        position = text.find("\n", position + 1)
        if position == -1:
            return text.split("\n")
    return text[:position].split("\n")


__all__ = ["RetrievedChunk", "RetrievalOptions", "RetrievalResult", "Retriever", "RepoRetriever", "retrieve"]
