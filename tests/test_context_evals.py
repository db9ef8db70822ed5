"""Cross-file task building, retrieval recall, the context benchmark and the CLI, on literal packages."""

import json
import os
import subprocess
import sys
from pathlib import Path

from evals.bench_context import bench_context
from evals.repo_tasks import build_repo_tasks, distinct, retrieval_recall

LIVEFIM = [sys.executable, "-m", "livefim.cli"]


def write(root: Path, files: dict[str, str]) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)


def package(root: Path) -> Path:
    pkg = root / "geo"
    write(pkg, {
        "__init__.py": "from .shapes import Circle\n",
        "shapes.py": "class Circle:\n    def __init__(self, r):\n        self.r = r\n\n\ndef unit():\n    return Circle(1)\n",
        "units.py": "METER = 1.0\n\n\ndef feet(x):\n    return x * 3.28\n",
        "app.py": (
            "from . import units\n"
            "from .shapes import Circle, unit\n"
            "\n\n"
            "def area(c):\n"
            "    return 3.14 * c.r * c.r\n"  # line 5: uses no imported name
            "\n\n"
            "def build():\n"
            "    c = Circle(2)\n"  # line 9: Circle, from shapes.py line 0
            "    u = unit()\n"  # line 10: unit, shapes.py line 5
            "    return units.feet(c.r) + units.METER\n"  # line 11: units.METER sorts first
        ),
    })
    return pkg


def test_tasks_are_reproducible_and_record_where_the_name_is_defined(tmp_path):
    pkg = package(tmp_path)
    tasks = build_repo_tasks([pkg], limit=10, seed=0)
    assert [(t.file, t.line, t.name, t.def_path, t.def_line) for t in sorted(tasks, key=lambda t: t.line)] == [
        ("app.py", 9, "Circle", "shapes.py", 0),
        ("app.py", 10, "unit", "shapes.py", 5),
        ("app.py", 11, "units.METER", "units.py", 0),
    ]
    task = next(t for t in tasks if t.line == 9)
    assert task.target == "    c = Circle(2)"
    assert task.prefix.endswith("def build():\n") and task.suffix.startswith("\n    u = unit()")
    assert build_repo_tasks([pkg], limit=10, seed=0) == tasks
    assert len(build_repo_tasks([pkg], limit=2, seed=1)) == 2


def test_pooled_seeds_count_each_task_once(tmp_path):
    pkg = package(tmp_path)
    pooled = build_repo_tasks([pkg], limit=2, seed=0) + build_repo_tasks([pkg], limit=2, seed=1)
    once = distinct(pooled)
    assert len(once) < len(pooled)  # 3 candidates: two draws of 2 share at least one
    assert sorted(t.line for t in once) == sorted({t.line for t in pooled})
    assert once == [t for i, t in enumerate(pooled) if (t.file, t.line) not in {(u.file, u.line) for u in pooled[:i]}]


def test_recall_finds_the_defining_chunks(tmp_path):
    tasks = build_repo_tasks([package(tmp_path)], limit=10, seed=0)
    report = retrieval_recall(tasks, ks=(1, 5))
    assert report["tasks"] == 3 and report["recall@5"] == 1.0


def test_bench_context_reports_build_update_and_retrieval(tmp_path):
    report = bench_context(package(tmp_path), cursors=10, edits=2)
    assert report["build"]["files"] == 4
    assert report["update"]["edits"] == 2 and report["update"]["p95_ms"] > 0
    assert report["retrieve"]["cursors"] == 10 and report["retrieve"]["p95_ms"] > 0
    assert report["retrieve"]["without_outline"]["p95_ms"] > 0
    assert report["persistence"]["size_mb"] >= 0


def test_livefim_index_builds_then_loads_and_prints_a_summary(tmp_path):
    repo = package(tmp_path / "repo")
    env = {**os.environ, "LIVEFIM_HOME": str(tmp_path / "home")}
    first = subprocess.run(LIVEFIM + ["index", str(repo)], capture_output=True, text=True, env=env, check=True)
    summary = json.loads(first.stdout)
    assert summary["status"] == "built" and summary["files"] == 4
    assert "indexing 4/4 files" in first.stderr
    assert summary["store"].startswith(str(tmp_path / "home" / "index"))
    second = subprocess.run(LIVEFIM + ["index", str(repo)], capture_output=True, text=True, env=env, check=True)
    assert json.loads(second.stdout)["status"] == "loaded"
    missing = subprocess.run(LIVEFIM + ["index", str(tmp_path / "nope")], capture_output=True, text=True, env=env)
    assert missing.returncode == 2 and "not a directory" in missing.stderr


def test_livefim_bench_context_prints_json(tmp_path):
    repo = package(tmp_path / "repo")
    result = subprocess.run(
        LIVEFIM + ["bench", "context", "--repo", str(repo), "--cursors", "5", "--edits", "1"],
        capture_output=True, text=True, check=True,
    )
    assert json.loads(result.stdout)["retrieve"]["cursors"] == 5


def test_repo_eval_completes_every_task_with_and_without_context(tmp_path, tiny_model):
    from evals.repo import run_repo_eval

    root = package(tmp_path)
    records: list[dict] = []
    summary = run_repo_eval(None, [root], limit=3, seed=0, loaded=tiny_model, records_out=records)
    assert summary["tasks"] == len(records) == 3
    assert all(r["context_chunks"] >= 1 for r in records)  # each line uses a sibling module's name
    assert summary["recall"]["tasks"] == 3 and "exact_match_gain" in summary


def test_repo_eval_indexes_each_repository_once_and_runs_the_chunks_arm(tmp_path, tiny_model, monkeypatch):
    import context.index
    from evals.repo import run_repo_eval

    built: list[Path] = []
    real_build = context.index.build_index
    monkeypatch.setattr(context.index, "build_index", lambda root, *a, **k: built.append(Path(root)) or real_build(root, *a, **k))
    records: list[dict] = []
    summary = run_repo_eval(None, [package(tmp_path)], limit=3, seed=0, loaded=tiny_model, records_out=records,
                            arms=("on", "chunks"))
    assert len(built) == 1 + 1  # the eval's own index, then retrieval_recall's
    assert all("chunks" in r and "on" in r and "off" not in r for r in records)
    assert "outline_exact_match_gain" in summary and "exact_match_gain" not in summary


def test_the_held_out_line_is_not_in_the_index_while_completing(tmp_path, tiny_model, monkeypatch):
    from context.index import build_index
    from engine.engine import CompletionEngine
    from engine.repo_context import RepoContext
    from evals.repo import complete_line

    root = package(tmp_path)
    task = build_repo_tasks([root], limit=1, seed=0)[0]
    context = RepoContext(build_index(root))
    engine = CompletionEngine(tiny_model, background=False, repo_context=context)
    seen: list[str] = []
    original = RepoContext.choose

    def spy(self, uri, *args, **kwargs):
        result = original(self, uri, *args, **kwargs)
        seen.append("".join(chunk.text for chunk in self.index.chunks_of(task.file)))
        return result

    monkeypatch.setattr(RepoContext, "choose", spy)
    complete_line(engine, task, retrieval=True)
    assert seen and task.target.strip() not in seen[0]
    context.flush()  # closed: the disk version is indexed again
    assert task.target.strip() in "".join(chunk.text for chunk in context.index.chunks_of(task.file))
    engine.close()
