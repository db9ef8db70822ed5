"""BM25 over identifier parts, with an inverted index that takes single-document updates.

Why identifier parts: code names are compounds (``parse_header_value``,
``HeaderParser``); splitting them lets ``header`` near the cursor find a chunk
that defines ``HeaderParser``. The unsplit name is kept as a term too, so an exact
name match still scores above a chance overlap of parts.

Why this shape of index: the engine edits one file at a time while a query must
stay a few milliseconds on 100k chunks. Postings of the bulk of the corpus live in
one CSR block of numpy arrays (``indptr``/``docs``/``tfs``): scoring a term is one
vectorised gather-add. Documents added later sit in a small delta scored one by
one; removed ones are masked out. When the delta or the dead postings grow past a
few percent, the block is rebuilt (``compact``), which costs a sort of all postings.

Scoring is Okapi BM25 with the Lucene idf ``log(1 + (N - df + 0.5) / (df + 0.5))``
(never negative), ``k1 = 1.2``, ``b = 0.75``.

Example (doc 0 says "parse" twice, doc 1 once and is longer)::

    >>> index = BM25Index()
    >>> index.add(0, term_counts("def parse_header(value): return parse(value)"))
    >>> index.add(1, term_counts("class Reader:\\n    def read_lines(self, stream): return parse(stream, mode, limit)"))
    >>> index.add(2, term_counts("def write_lines(stream): pass"))
    >>> [doc for doc, _ in index.search(split_identifiers("header = parse(")).hits]
    [0, 1]
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CAMEL_PART = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
GENERIC_STOP_WORDS = frozenset({"the", "a", "an", "of", "to", "is", "it", "in", "on", "and", "or", "if", "for"})

_split_cache: dict[str, tuple[str, ...]] = {}


def split_identifier(identifier: str) -> tuple[str, ...]:
    """Lowercased parts of one identifier, then the whole name when it has several parts.

    >>> split_identifier("parseHTTPHeader_value2")
    ('parse', 'http', 'header', 'value', 'parsehttpheader_value2')
    """
    cached = _split_cache.get(identifier)
    if cached is not None:
        return cached
    raw = [p.lower() for piece in identifier.split("_") for p in _CAMEL_PART.findall(piece)]
    parts = [p for p in raw if len(p) > 1 and not p.isdigit()]
    whole = identifier.lower().strip("_")
    if len(raw) > 1 and len(whole) > 1 and whole not in parts:
        parts.append(whole)
    elif not parts and len(whole) > 1:
        parts = [whole]
    out = tuple(parts)
    if len(_split_cache) < 500_000:
        _split_cache[identifier] = out
    return out


def split_identifiers(text: str, stop_words: frozenset[str] = frozenset()) -> list[str]:
    """All identifier terms of ``text``, in order, stop words (lowercase) removed."""
    terms: list[str] = []
    for identifier in IDENTIFIER.findall(text):
        for term in split_identifier(identifier):
            if term not in stop_words and term not in GENERIC_STOP_WORDS:
                terms.append(term)
    return terms


def term_counts(text: str, stop_words: frozenset[str] = frozenset()) -> Counter[str]:
    return Counter(split_identifiers(text, stop_words))


@dataclass(frozen=True)
class SearchResult:
    """Best documents first, and the query's total idf: ``hits[0][1] / query_weight`` is the
    share of the query's information the best document matches (about 1.0 = all terms once)."""

    hits: list[tuple[int, float]]
    query_weight: float


class BM25Index:
    """Inverted index over integer document ids (ids are never reused by the caller)."""

    def __init__(self, k1: float = 1.2, b: float = 0.75, max_query_terms: int = 48) -> None:
        self.k1 = k1
        self.b = b
        self.max_query_terms = max_query_terms
        self.vocab: dict[str, int] = {}
        self._df = np.zeros(1024, np.int32)
        self._doc_terms: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # id -> (term ids, tfs)
        self._doc_len = np.zeros(1024, np.float32)
        self._alive = np.zeros(1024, bool)
        self._total_len = 0.0
        self._indptr = np.zeros(1, np.int64)
        self._post_docs = np.zeros(0, np.int32)
        self._post_tfs = np.zeros(0, np.float32)
        self._delta: set[int] = set()  # added since the last compaction
        self._delta_cache: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._dead_in_block = 0  # removed docs whose postings are still in the block
        self._bulk = False

    # --- updates -----------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._doc_terms)

    def __contains__(self, doc_id: int) -> bool:
        return doc_id in self._doc_terms

    def _term_ids(self, terms: Iterable[str]) -> np.ndarray:
        ids = []
        for term in terms:
            term_id = self.vocab.get(term)
            if term_id is None:
                term_id = self.vocab[term] = len(self.vocab)
            ids.append(term_id)
        if len(self.vocab) > len(self._df):
            self._df = np.concatenate([self._df, np.zeros(max(len(self.vocab), len(self._df)), np.int32)])
        return np.asarray(ids, np.int32)

    def _grow_docs(self, doc_id: int) -> None:
        if doc_id >= len(self._doc_len):
            size = max(doc_id + 1, 2 * len(self._doc_len))
            self._doc_len = np.concatenate([self._doc_len, np.zeros(size - len(self._doc_len), np.float32)])
            self._alive = np.concatenate([self._alive, np.zeros(size - len(self._alive), bool)])

    def add(self, doc_id: int, counts: Mapping[str, int]) -> None:
        """Index a document given its term counts; an id already present is replaced."""
        if doc_id in self._doc_terms:
            self.remove(doc_id)
        ids = self._term_ids(counts.keys())
        tfs = np.fromiter(counts.values(), np.int32, len(counts))
        self.add_arrays(doc_id, ids, tfs)

    def add_arrays(self, doc_id: int, term_ids: np.ndarray, tfs: np.ndarray) -> None:
        """``add`` with term ids of ``vocab`` (the persisted form)."""
        self._grow_docs(doc_id)
        self._doc_terms[doc_id] = (term_ids, tfs)
        np.add.at(self._df, term_ids, 1)
        length = float(tfs.sum())
        self._doc_len[doc_id] = length
        self._alive[doc_id] = True
        self._total_len += length
        self._delta.add(doc_id)
        self._delta_cache = None
        self._maybe_compact()

    def remove(self, doc_id: int) -> None:
        entry = self._doc_terms.pop(doc_id, None)
        if entry is None:
            return
        term_ids, tfs = entry
        np.subtract.at(self._df, term_ids, 1)
        self._alive[doc_id] = False
        self._total_len -= float(tfs.sum())
        if doc_id in self._delta:
            self._delta.discard(doc_id)
            self._delta_cache = None
        else:
            self._dead_in_block += 1
        self._maybe_compact()

    def _delta_postings(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(docs, term ids, tfs) of the delta documents, concatenated (cached until the delta changes)."""
        if self._delta_cache is None:
            entries = [(doc, *self._doc_terms[doc]) for doc in self._delta]
            docs = np.repeat(np.fromiter((e[0] for e in entries), np.int64, len(entries)),
                             np.fromiter((len(e[1]) for e in entries), np.int64, len(entries)))
            terms = np.concatenate([e[1] for e in entries]) if entries else np.zeros(0, np.int32)
            tfs = np.concatenate([e[2] for e in entries]).astype(np.float64) if entries else np.zeros(0)
            self._delta_cache = (docs, terms, tfs)
        return self._delta_cache

    def begin_bulk(self) -> None:
        """Defer compaction while many documents are added (index build, load)."""
        self._bulk = True

    def end_bulk(self) -> None:
        self._bulk = False
        self.compact()

    def _maybe_compact(self) -> None:
        if self._bulk:
            return
        limit = max(1024, len(self._doc_terms) // 20)
        if len(self._delta) + self._dead_in_block > limit:
            self.compact()

    def compact(self) -> None:
        """Rebuild the CSR block from every live document (delta and dead postings go away)."""
        doc_ids = np.fromiter(self._doc_terms.keys(), np.int32, len(self._doc_terms))
        if len(doc_ids):
            terms = [self._doc_terms[int(d)] for d in doc_ids]
            lengths = np.fromiter((len(t[0]) for t in terms), np.int64, len(terms))
            all_terms = np.concatenate([t[0] for t in terms])
            all_tfs = np.concatenate([t[1] for t in terms]).astype(np.float32)
            all_docs = np.repeat(doc_ids, lengths)
            order = np.argsort(all_terms, kind="stable")
            self._post_docs = all_docs[order]
            self._post_tfs = all_tfs[order]
            counts = np.bincount(all_terms, minlength=len(self.vocab))
        else:
            self._post_docs = np.zeros(0, np.int32)
            self._post_tfs = np.zeros(0, np.float32)
            counts = np.zeros(len(self.vocab), np.int64)
        self._indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._delta.clear()
        self._delta_cache = None
        self._dead_in_block = 0

    # --- queries -----------------------------------------------------------------

    def score_all(self, query_terms: Iterable[str]) -> tuple[np.ndarray, float]:
        """BM25 score of every document id (0 for absent ones) and the query's idf mass.

        Each distinct known term counts once; past ``max_query_terms`` only the
        rarest terms are kept (common ones add little and cost the most).
        """
        n_docs = len(self._doc_terms)
        scores = np.zeros(len(self._doc_len), np.float32)
        term_ids = sorted({self.vocab[t] for t in query_terms if t in self.vocab})
        term_ids = [t for t in term_ids if self._df[t] > 0]
        if n_docs == 0 or not term_ids:
            return scores, 0.0
        ids = np.asarray(term_ids, np.int64)
        df = self._df[ids].astype(np.float64)
        idf = np.log1p((n_docs - df + 0.5) / (df + 0.5))
        if len(ids) > self.max_query_terms:
            keep = np.argsort(-idf, kind="stable")[: self.max_query_terms]
            ids, idf = ids[keep], idf[keep]
        avg_len = self._total_len / n_docs if self._total_len > 0 else 1.0
        norm = self.k1 * (1.0 - self.b + self.b * self._doc_len / avg_len)  # [capacity]
        block_terms = len(self._indptr) - 1
        for term_id, weight in zip(ids.tolist(), idf.tolist()):
            if term_id >= block_terms:
                continue
            start, end = self._indptr[term_id], self._indptr[term_id + 1]
            if start == end:
                continue
            docs = self._post_docs[start:end]  # each doc once per term: fancy += is safe
            tf = self._post_tfs[start:end]
            scores[docs] += weight * tf * (self.k1 + 1.0) / (tf + norm[docs])
        if self._delta:
            delta_docs, delta_terms, delta_tfs = self._delta_postings()
            mask = np.isin(delta_terms, ids)
            dense = np.zeros(len(self.vocab), np.float64)
            dense[ids] = idf
            docs, tf = delta_docs[mask], delta_tfs[mask]
            np.add.at(scores, docs, (dense[delta_terms[mask]] * tf * (self.k1 + 1.0) / (tf + norm[docs])).astype(np.float32))
        scores[~self._alive] = 0.0
        return scores, float(idf.sum())

    @staticmethod
    def top(scores: np.ndarray, k: int, exclude: Iterable[int] = (), only: Iterable[int] | None = None) -> list[tuple[int, float]]:
        """The ``k`` best (doc, score) of ``score_all``'s array; ``only`` restricts to those docs."""
        if only is not None:
            allowed = np.fromiter((d for d in only if d < len(scores)), np.int64)
            if len(allowed) == 0:
                return []
            candidates = allowed
        else:
            candidates = np.arange(len(scores))
        excluded = set(exclude)
        wanted = min(k + len(excluded), len(candidates))
        if k <= 0 or wanted <= 0:
            return []
        values = scores[candidates]
        top = np.argpartition(-values, wanted - 1)[:wanted] if wanted < len(candidates) else np.arange(len(candidates))
        top = top[values[top] > 0]
        top = top[np.argsort(-values[top], kind="stable")]
        hits = [(int(candidates[i]), float(values[i])) for i in top if int(candidates[i]) not in excluded]
        return hits[:k]

    def search(
        self, query_terms: Iterable[str], k: int = 20, exclude: Iterable[int] = (), only: Iterable[int] | None = None
    ) -> SearchResult:
        """The ``k`` best documents for the terms; ``exclude`` drops documents, ``only`` keeps just those."""
        scores, weight = self.score_all(query_terms)
        return SearchResult(self.top(scores, k, exclude, only), weight)

    # --- persistence -------------------------------------------------------------

    def export_arrays(self) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(vocab, doc ids, offsets, term ids, tfs): every document's terms, for saving."""
        vocab = [""] * len(self.vocab)
        for term, term_id in self.vocab.items():
            vocab[term_id] = term
        doc_ids = np.fromiter(self._doc_terms.keys(), np.int32, len(self._doc_terms))
        entries = [self._doc_terms[int(d)] for d in doc_ids]
        lengths = np.fromiter((len(e[0]) for e in entries), np.int64, len(entries))
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        term_ids = np.concatenate([e[0] for e in entries]).astype(np.int32) if entries else np.zeros(0, np.int32)
        tfs = np.concatenate([e[1] for e in entries]).astype(np.int32) if entries else np.zeros(0, np.int32)
        return vocab, doc_ids, offsets, term_ids, tfs

    @classmethod
    def from_arrays(
        cls, vocab: list[str], doc_ids: np.ndarray, offsets: np.ndarray, term_ids: np.ndarray, tfs: np.ndarray
    ) -> BM25Index:
        index = cls()
        index.vocab = {term: i for i, term in enumerate(vocab)}
        index._df = np.bincount(term_ids, minlength=max(len(vocab), 1)).astype(np.int32)
        capacity = int(doc_ids.max()) + 1 if len(doc_ids) else 1024
        index._doc_len = np.zeros(capacity, np.float32)
        index._alive = np.zeros(capacity, bool)
        for position, doc in enumerate(doc_ids.tolist()):
            start, end = int(offsets[position]), int(offsets[position + 1])
            index._doc_terms[doc] = (term_ids[start:end], tfs[start:end])
        cumulative = np.concatenate([[0], np.cumsum(tfs, dtype=np.int64)])
        lengths = cumulative[offsets[1:]] - cumulative[offsets[:-1]]
        index._doc_len[doc_ids] = lengths
        index._alive[doc_ids] = True
        index._total_len = float(tfs.sum())
        index.compact()
        return index


def idf_weight(n_docs: int, df: int) -> float:
    return math.log1p((n_docs - df + 0.5) / (df + 0.5))
