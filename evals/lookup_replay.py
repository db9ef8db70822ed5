"""Replay prompt-lookup speculation without the model, to choose its settings.

Why: under greedy decoding the target accepts exactly the drafted tokens that
match its plain output, so once a task's plain output is known, the passes a
lookup policy would make (and the rows of each) follow without running the
model. Only the price of a pass of n rows must be measured, once, on the
machine in question. One plain decode per task then scores any number of
settings in seconds, where ``livefim bench decode`` needs a full run for each.
The replay leaves out what is the same in every arm (detokenizing, stop
rules), so it overstates speed-ups a little; rank settings with it, then
measure the winner with ``livefim bench decode``.

    python -m evals.lookup_replay --seed 1 --per-kind 6 > replay.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Iterable

import torch

from cache import kv
from engine.decode import decode
from engine.runtime import LoadedModel, load_model
from engine.speculate import tokens_agreeing
from engine.types import CompletionOptions
from evals.bench_decode import KINDS, _prefill, _warm_up, decode_tasks, fim_prompt, prompt_lookup


@dataclass(frozen=True)
class ReplayTask:
    """A FIM prompt (``<|fim_suffix|>`` at ``marker``) and the target's plain greedy output for it."""

    kind: str
    ids: tuple[int, ...]
    marker: int
    max_tokens: int
    output: tuple[int, ...]


@dataclass(frozen=True)
class LookupPolicy:
    """The ``PromptLookup`` settings a replay tries."""

    max_draft: int = 8
    first_draft: int | None = None
    min_ngram: int = 2

    def label(self) -> str:
        first = self.max_draft if self.first_draft is None else self.first_draft
        return f"ngram {self.min_ngram}, drafts {first}->{self.max_draft}"


def replay(task: ReplayTask, policy: LookupPolicy, width: int = 1) -> list[int]:
    """The rows of each target pass ``engine.decode`` would make with this lookup: 1 + the draft's length.

    ``width`` > 1 verifies a tree of up to that many lookup candidates in one pass (shared prefixes once,
    a row per node) and keeps the one that comes truest: what tree attention could buy, before anyone
    builds it.

    >>> task = ReplayTask("demo", (7, 8, 9, 7, 8, 0, 1), 5, 8, (9, 7, 8, 9))  # 0 marks the suffix
    >>> replay(task, LookupPolicy(max_draft=4))   # after "7 8 9" the prefix goes on "7 8": both come true
    [3]
    >>> task = ReplayTask("demo", (4, 5, 6, 9, 4, 5, 7, 9, 8, 4, 0, 1), 10, 8, (5, 6, 9, 4))
    >>> policy = LookupPolicy(max_draft=2)   # after "4 5" the prefix goes on "7 9" (latest) and "6 9"
    >>> replay(task, policy), replay(task, policy, width=2)   # the chain tries "7 9" first
    ([3, 3], [5])
    """
    ids, marker, output = list(task.ids), task.marker, task.output
    lookup = prompt_lookup(ids, marker, max_draft=policy.max_draft, min_ngram=policy.min_ngram, first_draft=policy.first_draft)
    lookup.begin(ids[:marker])
    rows: list[int] = []
    done = 1  # the prefill's logits chose the first token
    while done < len(output):
        room = task.max_tokens - done
        candidates = [c[: max(0, room - 1)] for c in lookup.continuations(list(output[:done]), room - 1, width)]
        rows.append(1 + len({c[:depth] for c in candidates for depth in range(1, len(c) + 1)}))
        done += max((tokens_agreeing(c, output, done) for c in candidates), default=0) + 1
    return rows


def predicted_speedup(tasks: Iterable[ReplayTask], costs: dict[int, float], policy: LookupPolicy, width: int = 1) -> float:
    """Plain decode time over lookup time, both priced by ``costs`` (seconds of a pass by its rows; a tree's
    rows cost what a chain's do, which flatters trees). ``width`` > 1 replays a tree of candidates, whose
    passes can hold up to ``width * max_draft + 1`` rows: ``costs`` must price them."""
    plain = lookup = 0.0
    for task in tasks:
        plain += costs[1] * max(0, len(task.output) - 1)
        lookup += sum(costs[rows] for rows in replay(task, policy, width))
    return plain / lookup if lookup else 1.0


@torch.inference_mode()
def pass_costs(loaded: LoadedModel, ids: list[int], most_rows: int, repeats: int = 5) -> dict[int, float]:
    """Median seconds of a pass of 1..``most_rows`` rows on a cache of ``ids`` (row counts interleaved)."""
    cache = kv.new_cache(loaded.model.config)
    kv.encode_chunked(loaded.model, cache, ids)
    kv.reserve(cache, most_rows + 1)
    base = kv.length(cache)
    seconds: dict[int, list[float]] = {rows: [] for rows in range(1, most_rows + 1)}
    for _ in range(repeats):
        for rows in seconds:
            kv.crop_to(cache, base)
            started = time.perf_counter()
            loaded.model(input_ids=torch.tensor([ids[-rows:]], device=loaded.device), past_key_values=cache,
                         use_cache=True, logits_to_keep=rows)
            seconds[rows].append(time.perf_counter() - started)
    return {rows: statistics.median(values) for rows, values in seconds.items()}


@torch.inference_mode()
def collect(loaded: LoadedModel, kinds: tuple[str, ...], per_kind: int, seed: int, progress=None) -> list[ReplayTask]:
    """``livefim bench decode``'s tasks, each with the target's plain greedy output."""
    tasks = []
    for task in decode_tasks(kinds, per_kind, seed):
        ids, marker, context = fim_prompt(loaded, task)
        rows, _ = _prefill(loaded, ids[:-1])
        final = None
        for final in decode(loaded, [ids[-1]], context, CompletionOptions(max_tokens=task.max_tokens),
                            cache=kv.from_snapshot(loaded.model.config, rows), history=ids[:marker]):
            pass
        assert final is not None
        tasks.append(ReplayTask(task.kind, tuple(ids), marker, task.max_tokens, tuple(final.token_ids)))
        if progress:
            progress(f"{task.kind} {task.name}: {len(final.token_ids)} tokens")
    return tasks


POLICIES = tuple(LookupPolicy(max_draft=most, first_draft=first, min_ngram=ngram)
                 for ngram in (1, 2, 3) for first, most in ((None, 2), (None, 3), (None, 8), (1, 8), (2, 8), (3, 8)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--per-kind", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    kinds = tuple(k for k in args.kinds.split(",") if k)
    loaded = load_model(args.model, install_missing=True)
    _warm_up(loaded, 10)
    tasks = collect(loaded, kinds, args.per_kind, args.seed, progress=lambda line: print(line, file=sys.stderr, flush=True))
    costs = pass_costs(loaded, list(max(tasks, key=lambda t: len(t.ids)).ids), most_rows=9)
    table = {policy.label(): {kind: round(predicted_speedup([t for t in tasks if kind in ("all", t.kind)], costs, policy), 3)
                              for kind in (*kinds, "all")} for policy in POLICIES}
    slope = (costs[9] - costs[1]) / 8  # a tree can pass 9 rows: price those on the measured line
    priced = {**{rows: costs[1] + slope * (rows - 1) for rows in range(10, 8 * 4 + 2)}, **costs}
    trees = {policy.label(): {f"width {width}": round(predicted_speedup(tasks, priced, policy, width), 3) for width in (1, 2, 3, 4)}
             for policy in (LookupPolicy(max_draft=8), LookupPolicy(max_draft=8, first_draft=2))}
    print(json.dumps({"bench": "lookup-replay", "model": args.model, "seed": args.seed, "per_kind": args.per_kind,
                      "pass_ms_by_rows": {rows: round(s * 1000, 1) for rows, s in costs.items()}, "predicted_speedup": table,
                      "tree_predicted_speedup": trees}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
