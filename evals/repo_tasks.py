"""Cross-file next-line tasks from real code, and retrieval recall@k of the defining chunk.

Why these tasks: the question repository context must answer is "does the model
get to see the definition the next line uses?". A held-out line that uses a name
imported from a sibling module of the same package is exactly that situation,
and real packages nobody here wrote (standard-library packages, PyPI sdists)
keep us honest. The ground truth (where the name is defined) comes from Python's
own ``ast``, independently of the tree-sitter index being measured.

A task: the file's text up to the start of line ``line`` is the prefix, the line
itself is the target, and the suffix is the rest of the file with the target
line left empty (the cursor sits on an empty line, as in ``evals/edits.py``).

Example (one package, two modules)::

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp()) / "geo"
    >>> root.mkdir()
    >>> _ = (root / "__init__.py").write_text("")
    >>> _ = (root / "shapes.py").write_text("class Circle:\\n    def __init__(self, r):\\n        self.r = r\\n")
    >>> _ = (root / "app.py").write_text("from .shapes import Circle\\n\\n\\ndef unit():\\n    return Circle(1)\\n")
    >>> [(t.file, t.line, t.target, t.name, t.def_path, t.def_line) for t in build_repo_tasks([root], limit=5, seed=0)]
    [('app.py', 4, '    return Circle(1)', 'Circle', 'shapes.py', 0)]
"""

from __future__ import annotations

import ast
import json
import math
import random
import statistics
import sys
import sysconfig
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath

STDLIB_PACKAGES = ("email", "asyncio", "json", "importlib", "concurrent", "xml", "http")
# Never used to choose a retrieval setting: recall here is what unseen code gets (those absent
# from the running Python, e.g. distutils after 3.11, are skipped).
HELD_OUT_STDLIB_PACKAGES = (
    "multiprocessing", "unittest", "logging", "urllib", "idlelib", "lib2to3", "distutils", "ctypes",
    "tkinter", "xmlrpc", "wsgiref", "sqlite3", "dbm", "html", "re", "tomllib", "zoneinfo", "curses",
)
MAX_HOPS = 3


@dataclass(frozen=True)
class RepoTask:
    """One held-out line. Lines are 0-based; paths are relative to ``repo``."""

    repo: str
    file: str
    line: int
    prefix: str
    suffix: str
    target: str
    name: str  # as written in the line: "Circle" or "events.get_event_loop"
    def_path: str
    def_line: int


@dataclass
class _Module:
    path: str  # relative to the package root
    tree: ast.Module
    definitions: dict[str, int]  # top-level name -> 0-based line
    imports: dict[str, tuple[str, str | None]]  # bound name -> (absolute module, imported name or None)
    wildcards: list[str]  # absolute modules imported with *


def _module_name(path: str, package: str) -> str:
    parts = [package] + list(PurePosixPath(path).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _absolute(module: str | None, level: int, current: str, is_package: bool) -> str:
    if level == 0:
        return module or ""
    base = current.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join(base + ([module] if module else []))


def _read_package(root: Path) -> dict[str, _Module]:
    """Every module of the package at ``root``, keyed by absolute dotted name."""
    package = root.name
    modules: dict[str, _Module] = {}
    for file in sorted(root.rglob("*.py")):
        rel = file.relative_to(root).as_posix()
        if any(part in ("__pycache__", "site-packages") for part in rel.split("/")):
            continue
        try:
            tree = ast.parse(file.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        name = _module_name(rel, package)
        is_package = rel.endswith("__init__.py")
        definitions: dict[str, int] = {}
        imports: dict[str, tuple[str, str | None]] = {}
        wildcards: list[str] = []
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                definitions.setdefault(node.name, node.lineno - 1)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if isinstance(target, ast.Name):
                        definitions.setdefault(target.id, node.lineno - 1)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                source = _absolute(node.module, node.level, name, is_package)
                for alias in node.names:
                    if alias.name == "*":
                        wildcards.append(source)
                    else:
                        imports[alias.asname or alias.name] = (source, alias.name)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:
                        imports[alias.asname] = (alias.name, None)
        modules[name] = _Module(rel, tree, definitions, imports, wildcards)
    return modules


def _find(modules: dict[str, _Module], module: str, name: str, hops: int = 0) -> tuple[str, int] | None:
    """(path, line) where ``module.name`` is defined, following re-exports; None when not in the package."""
    found = modules.get(module)
    if found is None:
        return None
    if name in found.definitions:
        return found.path, found.definitions[name]
    if hops < MAX_HOPS:
        if name in found.imports:
            source, imported = found.imports[name]
            if imported is not None:
                hit = _find(modules, source, imported, hops + 1)
                if hit:
                    return hit
        for source in found.wildcards:
            hit = _find(modules, source, name, hops + 1)
            if hit:
                return hit
    return None


def _candidates(root: Path) -> list[RepoTask]:
    modules = _read_package(root)
    tasks: list[RepoTask] = []
    for module_name, module in sorted(modules.items(), key=lambda item: item[1].path):
        text = (root / module.path).read_text(encoding="utf-8")
        lines = text.split("\n")
        import_lines = {
            line
            for node in ast.walk(module.tree)
            if isinstance(node, (ast.Import, ast.ImportFrom))
            for line in range(node.lineno - 1, (node.end_lineno or node.lineno))
        }
        by_line: dict[int, tuple[str, tuple[str, int]]] = {}
        for node in ast.walk(module.tree):
            resolved: tuple[str, tuple[str, int]] | None = None
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in module.imports:
                source, imported = module.imports[node.value.id]
                submodule = f"{source}.{imported}" if imported else source
                if submodule in modules and modules[submodule].path != module.path:
                    hit = _find(modules, submodule, node.attr)
                    if hit:
                        resolved = (f"{node.value.id}.{node.attr}", hit)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id in module.imports:
                source, imported = module.imports[node.id]
                if imported is not None and source in modules:
                    hit = _find(modules, source, imported)
                    if hit:
                        resolved = (node.id, hit)
            if resolved is None or resolved[1][0] == module.path:
                continue
            line = node.lineno - 1
            if line in import_lines or line < 3 or node.end_lineno != node.lineno:
                continue
            if line not in by_line or resolved[0] < by_line[line][0]:
                by_line[line] = resolved
        for line, (name, (def_path, def_line)) in sorted(by_line.items()):
            target = lines[line]
            if not 6 <= len(target.strip()) <= 150:
                continue
            prefix = "".join(l + "\n" for l in lines[:line])
            suffix = "\n" + "\n".join(lines[line + 1 :])
            tasks.append(RepoTask(str(root), module.path, line, prefix, suffix, target, name, def_path, def_line))
    return tasks


def build_repo_tasks(repo_roots: list[Path], limit: int = 200, seed: int = 0, per_file: int = 4) -> list[RepoTask]:
    """Up to ``limit`` tasks, the same for the same roots, limit and seed.

    Each root is a package directory (``.../email``). Tasks are spread evenly over
    the roots and at most ``per_file`` come from one file, so one large module
    does not dominate.
    """
    rng = random.Random(seed)
    pools = []
    for root in repo_roots:
        pool = _candidates(Path(root))
        rng.shuffle(pool)
        pools.append(pool)
    quota = math.ceil(limit / max(1, len(pools)))
    chosen: list[RepoTask] = []
    per_file_count: dict[tuple[str, str], int] = {}
    leftovers: list[RepoTask] = []
    for pool in pools:
        taken = 0
        for task in pool:
            key = (task.repo, task.file)
            if per_file_count.get(key, 0) >= per_file:
                continue
            if taken >= quota:
                leftovers.append(task)
                continue
            per_file_count[key] = per_file_count.get(key, 0) + 1
            chosen.append(task)
            taken += 1
    for task in leftovers:  # roots with few tasks leave room for the others
        if len(chosen) >= limit:
            break
        key = (task.repo, task.file)
        if per_file_count.get(key, 0) < per_file:
            per_file_count[key] = per_file_count.get(key, 0) + 1
            chosen.append(task)
    return chosen[:limit]


def distinct(tasks: list[RepoTask]) -> list[RepoTask]:
    """Tasks in order, each (repository, file, line) once: seeds drawn from the same packages overlap."""
    seen: set[tuple[str, str, int]] = set()
    out = []
    for task in tasks:
        key = (task.repo, task.file, task.line)
        if key not in seen:
            seen.add(key)
            out.append(task)
    return out


def stdlib_roots(packages: tuple[str, ...] = STDLIB_PACKAGES) -> list[Path]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return [stdlib / name for name in packages if (stdlib / name / "__init__.py").is_file()]


def retrieval_recall(
    tasks: list[RepoTask],
    ks: tuple[int, ...] = (1, 5, 10),
    options=None,
    count_tokens: Callable[[str], int] | None = None,
    budget=None,
) -> dict:
    """Share of tasks whose defining chunk is among the first k retrieved, per k.

    One index per repository root, built once. ``by_kind`` splits the tasks into
    names imported directly (``from .x import Name`` then ``Name``) and attributes
    of an imported module (``from . import events`` then ``events.get_running_loop``;
    the target is the attribute's definition, which the file may never have used
    before). Also reports how often the skip signal fires, recall on the skipped
    tasks (skipping those would lose them), and retrieval latency. With
    ``count_tokens``, also ``recall_in_budget``: how often the defining chunk
    survives ``assemble_repo_prompt`` into the context budget, and
    ``definition_in_prompt``: how often the model sees the definition at all, as
    that chunk or as its signature line in a module outline (``context.outline``).
    """
    from context.assemble import ContextBudget, assemble_repo_prompt
    from context.index import build_index
    from context.retrieve import RetrievalOptions, retrieve

    options = options or RetrievalOptions(max_chunks=max(ks))
    indexes = {}
    ranks: list[int | None] = []
    skipped, skipped_hits, latencies = 0, 0, []
    reasons: dict[str, int] = {}
    in_budget = in_prompt = 0
    in_prompt_by_kind = {"imported_name": 0, "module_attribute": 0}
    for task in tasks:
        if task.repo not in indexes:
            indexes[task.repo] = build_index(Path(task.repo))
        index = indexes[task.repo]
        result = retrieve(index, task.file, task.prefix, task.suffix, options)
        latencies.append(result.elapsed_ms)
        rank = None
        for position, chunk in enumerate(result.chunks):
            if chunk.path == task.def_path and chunk.start_line <= task.def_line < chunk.end_line:
                rank = position
                reasons[chunk.reason.split(":")[0].split("+")[0]] = reasons.get(chunk.reason.split(":")[0].split("+")[0], 0) + 1
                break
        ranks.append(rank)
        if count_tokens is not None:
            prompt = assemble_repo_prompt(result.chunks, task.file, task.prefix, task.suffix, count_tokens,
                                          budget or ContextBudget(), repo_name=index.name, outline=result.outline)
            holds = any(c.path == task.def_path and c.start_line <= task.def_line < c.end_line for c in prompt.included)
            seen = holds or any(c.path == task.def_path and c.start_line == task.def_line for c in prompt.outlined)
            in_budget += holds
            in_prompt += seen
            in_prompt_by_kind["module_attribute" if "." in task.name else "imported_name"] += seen
        if result.skip:
            skipped += 1
            skipped_hits += rank is not None and rank < 5
    n = max(1, len(tasks))
    latencies.sort()
    by_kind = {}
    for kind, keep in (("imported_name", lambda t: "." not in t.name), ("module_attribute", lambda t: "." in t.name)):
        chosen = [r for t, r in zip(tasks, ranks) if keep(t)]
        if chosen:
            by_kind[kind] = {"tasks": len(chosen), **{f"recall@{k}": round(sum(r is not None and r < k for r in chosen) / len(chosen), 4) for k in ks}}
            if count_tokens is not None:
                by_kind[kind]["definition_in_prompt"] = round(in_prompt_by_kind[kind] / len(chosen), 4)
    return {
        "tasks": len(tasks),
        **{f"recall@{k}": round(sum(r is not None and r < k for r in ranks) / n, 4) for k in ks},
        "by_kind": by_kind,
        **({"recall_in_budget": round(in_budget / n, 4), "definition_in_prompt": round(in_prompt / n, 4)}
           if count_tokens is not None else {}),
        "skip_rate": round(skipped / n, 4),
        "recall@5_of_skipped": round(skipped_hits / skipped, 4) if skipped else None,
        "found_by": reasons,
        "retrieval_ms_p50": round(statistics.median(latencies), 2) if latencies else None,
        "retrieval_ms_p95": round(latencies[int(0.95 * (len(latencies) - 1))], 2) if latencies else None,
    }


def main(argv: list[str] | None = None) -> None:
    """``python -m evals.repo_tasks [--limit N] [--seed S ...] [--root DIR ... | --pypi | --held-out] [--outline-tokens T] [--dump FILE]``: recall as JSON.

    Several ``--seed`` values pool their tasks (``--limit`` each), each distinct task once.
    """
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--seed", type=int, action="append", default=None, help="repeatable (default: 0)")
    parser.add_argument("--root", action="append", default=None, help="package directory (default: stdlib packages)")
    parser.add_argument("--pypi", action="store_true", help="the PyPI releases of evals/repo_suite.toml instead")
    parser.add_argument("--held-out", action="store_true",
                        help="stdlib packages no retrieval setting was chosen on (HELD_OUT_STDLIB_PACKAGES) instead")
    parser.add_argument("--outline-tokens", type=int, default=256, help="module-outline budget (0: chunks only)")
    parser.add_argument("--chunk-tokens", type=int, default=None,
                        help="cut longer chunks to their head in the prompt (0: whole chunks; default: ContextBudget's)")
    parser.add_argument("--dump", default=None, help="write the tasks as JSON lines")
    args = parser.parse_args(argv)
    from context.assemble import ContextBudget
    from context.retrieve import RetrievalOptions

    if args.pypi:
        from evals.repo import pypi_roots

        roots = pypi_roots()
    elif args.held_out:
        roots = stdlib_roots(HELD_OUT_STDLIB_PACKAGES)
    else:
        roots = [Path(r) for r in args.root] if args.root else stdlib_roots()
    tasks = distinct([task for seed in args.seed or [0] for task in build_repo_tasks(roots, args.limit, seed)])
    count_tokens = qwen_token_counter()
    if args.dump:
        with open(args.dump, "w", encoding="utf-8") as out:
            for task in tasks:
                out.write(json.dumps(asdict(task)) + "\n")
    report = retrieval_recall(tasks, options=RetrievalOptions(), count_tokens=count_tokens,
                              budget=ContextBudget(max_outline_tokens=args.outline_tokens,
                                                   max_chunk_tokens=ContextBudget().max_chunk_tokens if args.chunk_tokens is None
                                                   else args.chunk_tokens or None))
    print(json.dumps(report, indent=2))


def qwen_token_counter() -> Callable[[str], int] | None:
    """Token counts from the installed Qwen2.5-Coder tokenizer file (``tokenizers`` only, no model)."""
    import os

    path = Path(os.environ.get("LIVEFIM_HOME") or Path.home() / ".cache" / "livefim") / "models" / "qwen2.5-coder-0.5b" / "tokenizer.json"
    if not path.is_file():
        return None
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False).ids)


if __name__ == "__main__":
    main(sys.argv[1:])
