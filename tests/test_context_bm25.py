"""BM25: identifier splitting, ranking on a literal corpus, and the fast index against a slow reference."""

import math
import random
from collections import Counter

import pytest

from context.bm25 import BM25Index, split_identifier, split_identifiers, term_counts


def test_identifier_splitting():
    assert split_identifier("parse_header") == ("parse", "header", "parse_header")
    assert split_identifier("HTTPServerError") == ("http", "server", "error", "httpservererror")
    assert split_identifier("getX2") == ("get", "getx2")  # one-letter and digit parts dropped, name kept
    assert split_identifier("__init__") == ("init",)
    assert split_identifier("x") == ()
    assert split_identifiers("self.read_line(buf)", frozenset({"self"})) == ["read", "line", "read_line", "buf"]


CORPUS = {
    0: "def parse_header(line):\n    name, value = line.split(':')\n    return name, value",
    1: "def parse_body(stream):\n    return stream.read()",
    2: "class HeaderParser:\n    def feed(self, data): self.buffer += data",
    3: "def render_page(template, context):\n    return template.format(**context)",
}


def test_ranking_on_a_literal_corpus():
    index = BM25Index()
    for doc, text in CORPUS.items():
        index.add(doc, term_counts(text))
    hits = [doc for doc, _ in index.search(split_identifiers("header = parse_header(line)")).hits]
    # Doc 0 holds every query term (parse, header, parse_header, line), the exact name
    # parse_header (in no other doc, so the highest idf) included. Docs 1 and 2 match one term
    # each ("parse" / "header" of HeaderParser), both in 2 of 4 docs, so the same idf and tf;
    # doc 1 is shorter (8 terms against 11) and length normalisation ranks it first.
    # Doc 3 shares nothing and is not returned.
    assert hits == [0, 1, 2]


def reference_scores(docs: dict[int, Counter], query: list[str], k1=1.2, b=0.75) -> dict[int, float]:
    """Textbook BM25, one document at a time (the slow reference)."""
    n = len(docs)
    avg = sum(sum(c.values()) for c in docs.values()) / n
    scores = {}
    for doc, counts in docs.items():
        length = sum(counts.values())
        total = 0.0
        for term in set(query):
            df = sum(1 for c in docs.values() if term in c)
            if df == 0 or term not in counts:
                continue
            idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
            tf = counts[term]
            total += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * length / avg))
        if total > 0:
            scores[doc] = total
    return scores


def test_incremental_index_matches_the_reference_through_adds_removes_and_compactions():
    rng = random.Random(7)
    words = [f"w{i}" for i in range(40)]
    index = BM25Index()
    docs: dict[int, Counter] = {}
    next_id = 0
    for step in range(600):
        if docs and rng.random() < 0.35:
            victim = rng.choice(sorted(docs))
            index.remove(victim)
            del docs[victim]
        else:
            counts = Counter(rng.choice(words[: rng.randint(3, 40)]) for _ in range(rng.randint(1, 12)))
            index.add(next_id, counts)
            docs[next_id] = counts
            next_id += 1
        if step % 97 == 0:
            index.compact()
        if step % 50 == 0 and docs:
            query = [rng.choice(words) for _ in range(4)]
            expected = reference_scores(docs, query)
            got = dict(index.search(query, k=len(docs) + 5).hits)
            assert got.keys() == expected.keys()
            for doc, score in expected.items():
                assert got[doc] == pytest.approx(score, rel=1e-5)


def test_exclude_and_only_filter_the_ranking():
    index = BM25Index()
    for doc, text in CORPUS.items():
        index.add(doc, term_counts(text))
    query = split_identifiers("parse header")
    assert [d for d, _ in index.search(query, exclude=[0]).hits] == [1, 2]
    assert [d for d, _ in index.search(query, only=[1, 3]).hits] == [1]


def test_export_and_import_keep_the_scores():
    index = BM25Index()
    for doc, text in CORPUS.items():
        index.add(doc * 10, term_counts(text))
    index.remove(10)
    copy = BM25Index.from_arrays(*index.export_arrays())
    query = split_identifiers("parse header template")
    got, expected = copy.search(query).hits, index.search(query).hits
    assert [d for d, _ in got] == [d for d, _ in expected] == [0, 30, 20]
    assert [s for _, s in got] == pytest.approx([s for _, s in expected])
