"""``livefim eval repo``: does repository context make next-line completions right more often?

Why: retrieval is only worth its prompt tokens if the model then writes lines
that use other files' names correctly. Tasks come from ``evals.repo_tasks``
(held-out lines using a name imported from a sibling module, in standard-library
packages and PyPI source releases). Each task is completed twice by the same
engine, with the product's windowed prompt (``PromptBudget`` prefix and suffix),
once without and once with repository context, and scored by exact match and
edit similarity; recall@k of the defining chunk is reported beside it.

The engine sees the task's buffer, not the file on disk: the document is opened
with the held-out line empty, so the index never holds the answer.
"""

from __future__ import annotations

import statistics
import time
import tomllib
from pathlib import Path
from typing import Callable

from context.assemble import ContextBudget
from context.retrieve import RetrievalOptions
from engine.engine import CompletionEngine
from engine.repo_context import RepoContext
from engine.runtime import LoadedModel, load_model
from engine.types import CompletionOptions, Scope
from evals.edits import edit_similarity, exact, fetch_release, paired_difference
from evals.repo_tasks import RepoTask, build_repo_tasks, qwen_token_counter, retrieval_recall, stdlib_roots

SUITE_FILE = Path(__file__).with_name("repo_suite.toml")
# off: no context; on: the product's context (chunks and module outlines); chunks: on without outlines.
ARMS = ("off", "on", "chunks")


def pypi_roots(path: Path = SUITE_FILE) -> list[Path]:
    """Package directories of the PyPI source releases listed in ``repo_suite.toml`` (downloaded, cached)."""
    with path.open("rb") as f:
        releases = tomllib.load(f)["release"]
    roots = []
    for release in releases:
        unpacked = fetch_release(release["package"], release["version"]) / "src"
        found = sorted(p for p in unpacked.glob(f"*/{release['import']}/__init__.py"))
        found += sorted(p for p in unpacked.glob(f"*/src/{release['import']}/__init__.py"))
        if not found:
            raise RuntimeError(f"{release['package']} {release['version']}: no package directory {release['import']!r}")
        roots.append(found[0].parent)
    return roots


def complete_line(engine: CompletionEngine, task: RepoTask, retrieval: bool) -> tuple[str, int, float]:
    """The engine's one-line completion at the task's cursor: text, context chunks, seconds."""
    uri = (Path(task.repo) / task.file).as_uri()
    options = CompletionOptions(max_tokens=48, scope=Scope.LINE, retrieval=retrieval)
    engine.open_document(uri, "python", 1, task.prefix + task.suffix)
    try:
        started = time.perf_counter()
        final = None
        for final in engine.complete_text(task.prefix, task.suffix, uri=uri, options=options):
            pass
        assert final is not None
        return final.text, final.timings.context_chunks, time.perf_counter() - started
    finally:
        engine.close_document(uri)


def run_repo_eval(
    model_name: str | None,
    roots: list[Path] | None = None,
    *,
    limit: int = 100,
    seed: int = 0,
    device: str | None = None,
    loaded: LoadedModel | None = None,
    context_tokens: int = 1024,
    order: str = "path",
    max_chunks: int = RetrievalOptions().max_chunks,
    arms: tuple[str, ...] = ("off", "on"),
    outline_tokens: int = ContextBudget().max_outline_tokens,
    chunk_tokens: int | None = ContextBudget().max_chunk_tokens,
    progress: Callable[[dict], None] | None = None,
    records_out: list[dict] | None = None,
) -> dict:
    """Exact match and edit similarity with retrieval off and on, over the same tasks."""
    from context.index import build_index

    loaded = loaded or load_model(model_name, device, install_missing=True)
    roots = roots if roots is not None else stdlib_roots() + pypi_roots()
    tasks = build_repo_tasks(roots, limit, seed)
    engines: dict[tuple[str, str], CompletionEngine] = {}  # (repo, "on" | "chunks"): the arm's context settings
    records: list[dict] = [] if records_out is None else records_out
    unknown = set(arms) - set(ARMS)
    if unknown:
        raise ValueError(f"unknown arms {sorted(unknown)}: choose from {', '.join(ARMS)}")
    # "off" runs on the "on" engine with retrieval turned off.
    settings = {arm: outline for arm, outline in (("on", outline_tokens), ("chunks", 0))
                if arm in arms or (arm == "on" and "off" in arms)}
    for task in tasks:
        if not any(repo == task.repo for repo, _ in engines):
            index = build_index(Path(task.repo))
            for arm, outline in settings.items():
                budget = ContextBudget(max_context_tokens=context_tokens, max_outline_tokens=outline,
                                       max_chunk_tokens=chunk_tokens)
                context = RepoContext(index, budget, RetrievalOptions(max_chunks=max_chunks), order=order)
                engines[(task.repo, arm)] = CompletionEngine(loaded, background=False, repo_context=context)
        record = {"repo": Path(task.repo).name, "file": task.file, "line": task.line, "name": task.name,
                  "target": task.target}
        for arm in ARMS:
            if arm in arms:
                engine = engines[(task.repo, "chunks" if arm == "chunks" else "on")]
                text, chunks, seconds = complete_line(engine, task, retrieval=arm != "off")
                record[arm], record[f"{arm}_s"] = text, round(seconds, 3)
                if arm != "off":
                    record.setdefault("context_chunks", chunks)  # the product's arm (on) when it ran
        records.append(record)
        if progress:
            progress(record)
    for engine in engines.values():
        engine.close()
    recall = retrieval_recall(tasks, options=RetrievalOptions(max_chunks=max_chunks), count_tokens=qwen_token_counter(),
                              budget=ContextBudget(max_context_tokens=context_tokens, max_outline_tokens=outline_tokens,
                                                   max_chunk_tokens=chunk_tokens))
    summary = summarize(records, loaded.name, recall)
    summary.update(context_tokens=context_tokens, outline_tokens=outline_tokens, chunk_tokens=chunk_tokens, order=order,
                   max_chunks=max_chunks,
                   arms=list(arms))
    return summary


def summarize(records: list[dict], model: str, recall: dict) -> dict:
    """Per arm: exact match, edit similarity, median seconds; paired gains of each context arm over ``off``.

    With the ``chunks`` arm too, ``outline_exact_match_gain`` (and its edit
    similarity twin) is ``on`` minus ``chunks``: what the module outlines add to
    the same chunks.
    """
    n = max(1, len(records))
    arms = [arm for arm in ARMS if records and arm in records[0]]
    em = {arm: [float(exact(r[arm], r["target"])) for r in records] for arm in arms}
    es = {arm: [edit_similarity(r[arm], r["target"]) for r in records] for arm in arms}
    summary: dict = {"eval": "repo", "model": model, "tasks": len(records), "repos": sorted({r["repo"] for r in records})}
    for arm in arms:
        name = {"off": "retrieval_off", "on": "retrieval_on", "chunks": "retrieval_chunks_only"}[arm]
        summary[name] = {"exact_match": round(sum(em[arm]) / n, 4), "edit_similarity": round(sum(es[arm]) / n, 4),
                         "median_s": round(statistics.median(r[f"{arm}_s"] for r in records), 3)}
    pairs = [("on", "off", "exact_match_gain", "edit_similarity_gain"),
             ("chunks", "off", "chunks_exact_match_gain", "chunks_edit_similarity_gain"),
             ("on", "chunks", "outline_exact_match_gain", "outline_edit_similarity_gain")]
    for arm, base, em_key, es_key in pairs:
        if arm in em and base in em:
            summary[em_key] = paired_difference(em[arm], em[base])
            summary[es_key] = paired_difference(es[arm], es[base])
    with_context = [i for i, r in enumerate(records) if r.get("context_chunks")]
    summary["tasks_given_context"] = len(with_context)
    if "on" in em and "off" in em:
        summary["exact_match_gain_when_given_context"] = paired_difference([em["on"][i] for i in with_context],
                                                                           [em["off"][i] for i in with_context])
    summary["recall"] = recall
    return summary
