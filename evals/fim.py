"""``livefim eval fim``: pass@1, exact match and speed on HumanEval-Infilling.

Whole-line holes are posed as an editor would see them: the cursor on an empty
line, the suffix starting with that line's newline. The engine's completion
then fills the line and the program is ``prompt + completion + "\\n" + suffix``.
Single-line sets ask for one line (LINE scope); multi-line ones for a block.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

from engine.engine import CompletionEngine
from engine.types import CompletionOptions, Scope
from evals.humaneval import WHOLE_LINE_SETS, InfillTask, exact_match, load_tasks, passes


@dataclass(frozen=True)
class TaskResult:
    task_id: str
    completion: str
    passed: bool
    exact: bool
    generated_tokens: int
    prompt_tokens: int
    prefill_ms: float
    decode_ms: float
    finish_reason: str


def options_for(set_name: str, max_tokens: int) -> CompletionOptions:
    if set_name == "singleline":
        return CompletionOptions(max_tokens=max_tokens, scope=Scope.LINE)
    return CompletionOptions(max_tokens=max_tokens, scope=Scope.BLOCK, max_lines=40)


def complete_task(engine: CompletionEngine, task: InfillTask, set_name: str, max_tokens: int) -> tuple[str, object]:
    whole_line = set_name in WHOLE_LINE_SETS
    suffix = "\n" + task.suffix if whole_line else task.suffix
    final = None
    for final in engine.complete_text(task.prompt, suffix, options=options_for(set_name, max_tokens)):
        pass
    assert final is not None and final.done, task.task_id
    completion = final.text + "\n" if whole_line else final.text
    return completion, final


def run_fim_eval(
    engine: CompletionEngine,
    set_name: str,
    limit: int | None = None,
    seed: int = 0,
    max_tokens: int = 128,
    out: Path | None = None,
    progress: bool = True,
) -> dict:
    """Score every task; tests run in subprocesses while the model works on the next task."""
    tasks = load_tasks(set_name, limit, seed)
    results: list[TaskResult] = []
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=2) as pool:
        pending = []
        for index, task in enumerate(tasks, 1):
            completion, final = complete_task(engine, task, set_name, max_tokens)
            pending.append((task, completion, final, pool.submit(passes, task, completion)))
            if progress and (index % 10 == 0 or index == len(tasks)):
                done = [p for p in pending if p[3].done()]
                rate = sum(p[3].result() for p in done) / max(1, len(done))
                print(
                    f"[{index}/{len(tasks)}] {time.monotonic() - started:.0f}s pass@1 so far {rate:.3f}",
                    file=sys.stderr,
                    flush=True,
                )
        for task, completion, final, future in pending:
            results.append(
                TaskResult(
                    task_id=task.task_id,
                    completion=completion,
                    passed=future.result(),
                    exact=exact_match(completion, task.canonical_solution),
                    generated_tokens=final.generated_tokens,
                    prompt_tokens=final.timings.prompt_tokens,
                    prefill_ms=final.timings.prefill_ms,
                    decode_ms=final.timings.decode_ms,
                    finish_reason=final.finish_reason.value,
                )
            )
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w", encoding="utf-8") as f:
            for result in results:
                f.write(json.dumps(asdict(result)) + "\n")
    return summarize(results, set_name, engine.model.name, limit, seed, time.monotonic() - started)


def summarize(results: Iterable[TaskResult], set_name: str, model: str, limit: int | None, seed: int, seconds: float) -> dict:
    results = list(results)
    decode_tokens = sum(r.generated_tokens for r in results)
    prompt_tokens = sum(r.prompt_tokens for r in results)
    return {
        "eval": "fim",
        "set": set_name,
        "model": model,
        "tasks": len(results),
        "subset": f"seeded random {limit} (seed {seed})" if limit else "all",
        "pass_at_1": round(sum(r.passed for r in results) / max(1, len(results)), 4),
        "exact_match": round(sum(r.exact for r in results) / max(1, len(results)), 4),
        "decode_ms_per_token": round(sum(r.decode_ms for r in results) / max(1, decode_tokens), 1),
        "prefill_tokens_per_s": round(prompt_tokens / max(1e-9, sum(r.prefill_ms for r in results) / 1000), 1),
        "median_latency_ms": round(statistics.median(r.prefill_ms + r.decode_ms for r in results), 1) if results else 0,
        "mean_generated_tokens": round(statistics.mean(r.generated_tokens for r in results), 1) if results else 0,
        "wall_seconds": round(seconds, 1),
    }
