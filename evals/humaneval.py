"""HumanEval-Infilling: tasks, and pass/fail by running the tests in a subprocess.

Why a subprocess with a timeout: the generated code is untrusted and may loop
forever; it must never run inside the engine's process.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

SETS = {
    "singleline": "HumanEval-SingleLineInfilling.jsonl.gz",
    "multiline": "HumanEval-MultiLineInfilling.jsonl.gz",
    "randomspan": "HumanEval-RandomSpanInfilling.jsonl.gz",
    "randomspan-light": "HumanEval-RandomSpanInfillingLight.jsonl.gz",
}
# Sets whose hole is whole lines (the solution ends with a newline).
WHOLE_LINE_SETS = {"singleline", "multiline"}


@dataclass(frozen=True)
class InfillTask:
    task_id: str
    prompt: str
    suffix: str
    canonical_solution: str
    test: str
    entry_point: str


def data_dir() -> Path:
    """``$LIVEFIM_DATA/humaneval-infilling`` or ``shared/data`` beside the repository."""
    if env := os.environ.get("LIVEFIM_DATA"):
        return Path(env) / "humaneval-infilling"
    repo = Path(__file__).resolve().parent.parent
    for candidate in (repo / "shared" / "data", repo.parent / "shared" / "data"):
        if (candidate / "humaneval-infilling").is_dir():
            return candidate / "humaneval-infilling"
    raise FileNotFoundError(
        "HumanEval-Infilling data not found: set LIVEFIM_DATA to the folder holding humaneval-infilling/"
    )


def load_tasks(name: str, limit: int | None = None, seed: int = 0) -> list[InfillTask]:
    """All tasks of a set, or a seeded random subset of ``limit`` (kept in file order)."""
    if name not in SETS:
        raise ValueError(f"unknown set {name!r}; choose from {', '.join(SETS)}")
    with gzip.open(data_dir() / SETS[name], "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    tasks = [InfillTask(**{k: row[k] for k in InfillTask.__dataclass_fields__}) for row in rows]
    if limit is not None and limit < len(tasks):
        chosen = sorted(random.Random(seed).sample(range(len(tasks)), limit))
        tasks = [tasks[i] for i in chosen]
    return tasks


def program(task: InfillTask, completion: str) -> str:
    return f"{task.prompt}{completion}{task.suffix}\n\n{task.test}\n\ncheck({task.entry_point})\n"


def passes(task: InfillTask, completion: str, timeout_s: float = 10.0) -> bool:
    """Run the task's tests against ``prompt + completion + suffix`` in a fresh interpreter."""
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False, encoding="utf-8") as f:
        f.write(program(task, completion))
        path = f.name
    try:
        result = subprocess.run(
            [sys.executable, "-I", path], capture_output=True, timeout=timeout_s, cwd=tempfile.gettempdir()
        )
        return result.returncode == 0
    except subprocess.TimeoutExpired:
        return False
    finally:
        os.unlink(path)


def normalized(code: str) -> str:
    """Compare code up to trailing spaces and surrounding blank lines."""
    return "\n".join(line.rstrip() for line in code.strip("\n").split("\n")).strip("\n")


def exact_match(completion: str, canonical: str) -> bool:
    return normalized(completion) == normalized(canonical)
