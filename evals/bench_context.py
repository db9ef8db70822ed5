"""``livefim bench context``: how fast the repository index builds, updates and answers.

Three numbers decide whether context can sit on the keystroke path:

* **build** — files/s for a cold index (what ``livefim index`` costs once);
* **update** — latency of ``RepoIndex.update_file`` after a one-line edit (what
  every save or edit costs the engine), measured on seeded random files with a
  new function inserted mid-file, then the original restored;
* **retrieve** — latency of ``retrieve`` at seeded random cursors taken from the
  repository's own files (start of a random non-blank line), p50/p95; target
  p95 < 20 ms on this 2-core CPU.

Also save/load time and size of the stored index (in a temporary directory, so
the user's cache is untouched). No model is involved.

Example::

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> for i in range(3):
    ...     _ = (root / f"m{i}.py").write_text(f"def f{i}(x):\\n    return x + {i}\\n")
    >>> report = bench_context(root, cursors=5, edits=2)
    >>> report["build"]["files"], report["retrieve"]["cursors"], report["update"]["edits"]
    (3, 5, 2)
"""

from __future__ import annotations

import platform
import random
import statistics
import sysconfig
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from context.index import Progress, build_index
from context.retrieve import RetrievalOptions, retrieve
from context.store import DiskStore
from evals.machine import machine_facts


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else 0.0


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(_percentile(values, 0.5), 3),
        "p95_ms": round(_percentile(values, 0.95), 3),
        "max_ms": round(max(values), 3) if values else 0.0,
        "mean_ms": round(statistics.fmean(values), 3) if values else 0.0,
    }


def default_repo() -> Path:
    """The CPython standard library on this machine (well over 1,000 Python files)."""
    return Path(sysconfig.get_paths()["stdlib"])


def bench_context(
    repo: Path,
    cursors: int = 200,
    edits: int = 20,
    seed: int = 0,
    progress: Progress | None = None,
    options: RetrievalOptions = RetrievalOptions(),
) -> dict:
    rng = random.Random(seed)
    repo = Path(repo).resolve()

    # 1. Cold build.
    started = time.perf_counter()
    index = build_index(repo, progress)
    build_s = time.perf_counter() - started
    report = index.last_report
    assert report is not None
    source_bytes = sum(entry.size for entry in index.files.values())
    build = {
        "files": len(index.files),
        "chunks": len(index.chunks),
        "names": index.stats()["names"],
        "source_mb": round(source_bytes / 1e6, 2),
        "seconds": round(build_s, 2),
        "files_per_s": round(len(index.files) / build_s, 1) if build_s else None,
        "skipped": dict(report.skipped),
    }

    # 2. Save and load (temporary store).
    with tempfile.TemporaryDirectory() as scratch:
        store = DiskStore(Path(scratch))
        started = time.perf_counter()
        store.save(index)
        save_s = time.perf_counter() - started
        size = Path(store.location(repo)).stat().st_size
        started = time.perf_counter()
        loaded = store.load(repo)
        load_s = time.perf_counter() - started
        assert loaded is not None and len(loaded.chunks) == len(index.chunks)
        del loaded
    persistence = {"save_s": round(save_s, 2), "load_s": round(load_s, 2), "size_mb": round(size / 1e6, 2)}

    # 3. Incremental update: insert a function mid-file, then restore the file.
    paths = sorted(index.files)
    edit_ms: list[float] = []
    restore_ms: list[float] = []
    for number in rng.sample(paths, min(edits, len(paths))):
        original = (repo / number).read_text(encoding="utf-8")
        lines = original.split("\n")
        # Insert at the start of a top-level chunk near the middle: a syntax boundary, so the new
        # function is not swallowed by a string or a block.
        starts = [c.start_line for c in index.chunks_of(number) if lines[c.start_line][:1] not in (" ", "\t")] or [0]
        cut = min(starts, key=lambda start: abs(start - len(lines) // 2))
        probe = f"livefim_bench_probe_{len(edit_ms)}"
        snippet = {
            "python": f"def {probe}(x):\n    return x\n",
            "go": f"func {probe}(x int) int {{ return x }}\n",
            "rust": f"fn {probe}(x: i32) -> i32 {{ x }}\n",
        }.get(index.files[number].language, f"function {probe}(x) {{ return x; }}\n")
        edited = "\n".join(lines[:cut]) + ("\n" if cut else "") + snippet + "\n".join(lines[cut:])
        started = time.perf_counter()
        index.update_file(number, edited)
        edit_ms.append((time.perf_counter() - started) * 1000)
        found = [ref.path for ref in index.definitions(probe)]
        assert found == [number], f"{probe} inserted at line {cut} of {number} not found: {found}"
        started = time.perf_counter()
        index.update_file(number, original)
        restore_ms.append((time.perf_counter() - started) * 1000)
        assert not index.definitions(probe)
    update = {"edits": len(edit_ms), **_summary(edit_ms), "restore": _summary(restore_ms)}

    # 4. Retrieval at cursors sampled from the repository's own files; at each cursor also
    #    without module outlines, side by side, so their cost reads as a difference.
    latencies: list[float] = []
    without_outline: list[float] = []
    plain = replace(options, outline_names=0)
    skipped = returned = outlined = 0
    for _ in range(cursors):
        path = rng.choice(paths)
        text = (repo / path).read_text(encoding="utf-8")
        lines = text.split("\n")
        candidates = [i for i, line in enumerate(lines) if line.strip()] or [0]
        line = rng.choice(candidates)
        offset = sum(len(l) + 1 for l in lines[:line])
        started = time.perf_counter()
        result = retrieve(index, path, text[:offset], text[offset:], options)
        latencies.append((time.perf_counter() - started) * 1000)
        skipped += result.skip
        returned += len(result.chunks)
        outlined += len(result.outline)
        started = time.perf_counter()
        retrieve(index, path, text[:offset], text[offset:], plain)
        without_outline.append((time.perf_counter() - started) * 1000)
    retrieval = {
        "cursors": len(latencies),
        **_summary(latencies),
        "without_outline": _summary(without_outline),
        "mean_outline_signatures": round(outlined / max(1, len(latencies)), 2),
        "skip_rate": round(skipped / max(1, len(latencies)), 3),
        "mean_chunks": round(returned / max(1, len(latencies)), 2),
    }
    return {
        "repo": str(repo),
        **machine_facts(),
        "python": platform.python_version(),
        "build": build,
        "persistence": persistence,
        "update": update,
        "retrieve": retrieval,
    }
