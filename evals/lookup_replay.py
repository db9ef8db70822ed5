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

A draft model replays the same way (``--draft-model``): on the accepted text
its greedy choice at each position is what one pass over the plain output
gives, so its drafts, and the passes of both models, follow too, up to the
first wrong drafted token. What it would draft after that is unknown; the
replay assumes it stops once it has fed that token, which flatters the draft
model. It also prices the draft model against lookup: the draft step cost at
which drafting alone would match lookup's speed-up.

    python -m evals.lookup_replay --seed 1 --per-kind 6 > replay.json
    python -m evals.lookup_replay --kinds repo-line,repo-block --draft-model qwen2.5-coder-0.5b
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
from engine.speculate import DraftPricing, SpeculationSettings, tokens_agreeing
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
    draft_choice: tuple[int, ...] = ()  # a draft model's greedy token at each output position, given the output before it
    draft_confidence: tuple[float, ...] = ()  # ... and its probability


@dataclass(frozen=True)
class LookupPolicy:
    """The ``PromptLookup`` settings a replay tries."""

    max_draft: int = 8
    first_draft: int | None = None
    min_ngram: int = 2
    priced: bool = False  # lengths by ``best_draft_length`` from the pass costs and the drafts' running acceptance

    def label(self) -> str:
        if self.priced:
            return f"ngram {self.min_ngram}, drafts priced up to {self.max_draft}"
        first = self.max_draft if self.first_draft is None else self.first_draft
        return f"ngram {self.min_ngram}, drafts {first}->{self.max_draft}"


def replay(task: ReplayTask, policy: LookupPolicy, width: int = 1, pricing: DraftPricing | None = None) -> list[int]:
    """The rows of each target pass ``engine.decode`` would make with this lookup: 1 + the draft's length.

    ``width`` > 1 verifies a tree of up to that many lookup candidates in one pass (shared prefixes once,
    a row per node) and keeps the one that comes truest: what tree attention could buy, before anyone
    builds it. ``pricing``: for a ``priced`` policy, the pass prices and the acceptance tally (which the
    replay updates, as the engine's requests do).

    >>> task = ReplayTask("demo", (7, 8, 9, 7, 8, 0, 1), 5, 8, (9, 7, 8, 9))  # 0 marks the suffix
    >>> replay(task, LookupPolicy(max_draft=4))   # after "7 8 9" the prefix goes on "7 8": both come true
    [3]
    >>> task = ReplayTask("demo", (4, 5, 6, 9, 4, 5, 7, 9, 8, 4, 0, 1), 10, 8, (5, 6, 9, 4))
    >>> policy = LookupPolicy(max_draft=2)   # after "4 5" the prefix goes on "7 9" (latest) and "6 9"
    >>> replay(task, policy), replay(task, policy, width=2)   # the chain tries "7 9" first
    ([3, 3], [5])
    """
    ids, marker, output = list(task.ids), task.marker, task.output
    lookup = prompt_lookup(ids, marker, max_draft=policy.max_draft, min_ngram=policy.min_ngram, first_draft=policy.first_draft,
                           pricing=pricing if policy.priced else None)
    lookup.begin(ids[:marker])
    rows: list[int] = []
    done = 1  # the prefill's logits chose the first token
    while done < len(output):
        room = task.max_tokens - done
        candidates = [c[: max(0, room - 1)] for c in lookup.continuations(list(output[:done]), room - 1, width)]
        rows.append(1 + len({c[:depth] for c in candidates for depth in range(1, len(c) + 1)}))
        done += max((tokens_agreeing(c, output, done) for c in candidates), default=0) + 1
    return rows


def replay_draft(task: ReplayTask, max_draft: int, min_confidence: float, lookup: LookupPolicy | None = None,
                 min_lookup: int = 3) -> list[tuple[int, tuple[int, ...]]]:
    """The passes ``engine.decode`` makes with a ``DraftModel`` (``lookup`` None) or ``Combined`` (``lookup``'s
    settings, drafts at full length, the draft model when lookup's draft is shorter than ``min_lookup``):
    per target pass, its rows and the rows of each draft-model forward before it.

    Past the first wrong drafted token the replay has no draft predictions; it assumes the draft stops
    once it has fed that token (as when its confidence drops: an optimistic bound on the draft model's
    speed), and likewise at the end of the output.

    >>> task = ReplayTask("demo", (4, 0, 1), 1, 8, (5, 6, 7, 8), draft_choice=(5, 6, 9, 8), draft_confidence=(.9,) * 4)
    >>> replay_draft(task, max_draft=4, min_confidence=0.5)   # drafts "6 9" after "5": one right, then "8"
    [(3, (2, 1, 1)), (2, (1,))]
    """
    ids, marker, output = list(task.ids), task.marker, task.output
    proposer = None
    if lookup is not None:
        proposer = prompt_lookup(ids, marker, max_draft=lookup.max_draft, min_ngram=lookup.min_ngram, first_draft=None)
        proposer.begin(ids[:marker])
    passes: list[tuple[int, tuple[int, ...]]] = []
    fed, pending = 0, 1  # output tokens the draft model has rows for; prompt ids it has yet to feed (<|fim_middle|>)
    done = 1
    while done < len(output):
        limit = task.max_tokens - done - 1
        found = proposer.continuations(list(output[:done]), limit, 1) if proposer is not None else []
        if found and len(found[0]) >= min(min_lookup, limit):
            passes.append((1 + len(found[0][: max(0, limit)]), ()))
            done += tokens_agreeing(found[0][: max(0, limit)], output, done) + 1
            continue
        limit = min(limit, max_draft)
        if limit <= 0:
            passes.append((1, ()))
            done += 1
            continue
        feeds = [pending + done - fed]  # catch up on what the target accepted, then one row per drafted token
        pending, fed = 0, done
        drafted = taken = 0
        while done + drafted < len(output):  # past the output its drafts are unknown: assume it stops
            at = done + drafted
            if drafted:  # the last drafted token is fed to choose the next one
                feeds.append(1)
                fed += 1
                if task.draft_confidence[at] < min_confidence:
                    break
            drafted += 1
            right = task.draft_choice[at] == output[at]
            taken += right
            if drafted >= limit:
                break
            if not right:  # it feeds its wrong token too; from there on, assume its confidence drops
                feeds.append(1)
                break
        passes.append((1 + drafted, tuple(feeds)))
        done += taken + 1
    return passes


def predicted_speedup(tasks: Iterable[ReplayTask], costs: dict[int, float], policy: LookupPolicy, width: int = 1) -> float:
    """Plain decode time over lookup time, both priced by ``costs`` (seconds of a pass by its rows; a tree's
    rows cost what a chain's do, which flatters trees). ``width`` > 1 replays a tree of candidates, whose
    passes can hold up to ``width * max_draft + 1`` rows: ``costs`` must price them. A ``priced`` policy
    sizes drafts from the same ``costs`` and one acceptance tally kept across the tasks, in order."""
    plain = lookup = 0.0
    pricing = DraftPricing(tuple(costs[rows] / costs[1] for rows in range(1, policy.max_draft + 2))) if policy.priced else None
    for task in tasks:
        plain += costs[1] * max(0, len(task.output) - 1)
        lookup += sum(costs[rows] for rows in replay(task, policy, width, pricing))
    return plain / lookup if lookup else 1.0


def predicted_draft_speedup(tasks: Iterable[ReplayTask], costs: dict[int, float], draft_costs: dict[int, float],
                            max_draft: int, min_confidence: float, lookup: LookupPolicy | None = None,
                            min_lookup: int = 3) -> float:
    """Plain decode time over ``replay_draft``'s: target passes priced by ``costs``, draft-model forwards by
    ``draft_costs`` (rows past the measured ones on the line through its first and last)."""
    most = max(draft_costs)
    slope = (draft_costs[most] - draft_costs[1]) / max(1, most - 1)
    plain = spent = 0.0
    for task in tasks:
        plain += costs[1] * max(0, len(task.output) - 1)
        for rows, feeds in replay_draft(task, max_draft, min_confidence, lookup, min_lookup):
            spent += costs[rows] + sum(draft_costs.get(r, draft_costs[most] + slope * (r - most)) for r in feeds)
    return plain / spent if spent else 1.0


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
def collect(loaded: LoadedModel, kinds: tuple[str, ...], per_kind: int, seed: int, progress=None,
            draft: LoadedModel | None = None) -> list[ReplayTask]:
    """``livefim bench decode``'s tasks, each with the target's plain greedy output and, with a ``draft`` model,
    that model's greedy choice and its probability at each output position (one pass over the output)."""
    tasks = []
    for task in decode_tasks(kinds, per_kind, seed):
        ids, marker, context = fim_prompt(loaded, task)
        rows, _ = _prefill(loaded, ids[:-1])
        final = None
        for final in decode(loaded, [ids[-1]], context, CompletionOptions(max_tokens=task.max_tokens),
                            cache=kv.from_snapshot(loaded.model.config, rows), history=ids[:marker]):
            pass
        assert final is not None
        output = tuple(final.token_ids)
        choice, confidence = draft_predictions(draft, ids, output) if draft is not None else ((), ())
        tasks.append(ReplayTask(task.kind, tuple(ids), marker, task.max_tokens, output, choice, confidence))
        if progress:
            progress(f"{task.kind} {task.name}: {len(final.token_ids)} tokens")
    return tasks


@torch.inference_mode()
def draft_predictions(draft: LoadedModel, ids: list[int], output: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """The draft model's greedy token and its probability at each position of ``output`` after the prompt ``ids``."""
    if not output:
        return (), ()
    cache = kv.new_cache(draft.model.config)
    kv.encode_chunked(draft.model, cache, ids[:-1])
    logits = draft.model(input_ids=torch.tensor([[ids[-1], *output[:-1]]], device=draft.device), past_key_values=cache,
                         use_cache=True, logits_to_keep=len(output)).logits[0].float().cpu()  # [len(output), V]
    top = torch.softmax(logits, dim=-1).max(dim=-1)
    return tuple(top.indices.tolist()), tuple(top.values.tolist())


POLICIES = (*(LookupPolicy(max_draft=most, first_draft=first, min_ngram=ngram)
               for ngram in (1, 2, 3) for first, most in ((None, 2), (None, 3), (2, 3), (None, 8), (1, 8), (2, 8), (3, 8))),
            *(LookupPolicy(max_draft=most, min_ngram=ngram, priced=True) for ngram in (1, 2) for most in (3, 8)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--per-kind", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--draft-model", default=None, help="also replay this model drafting (and lookup-or-draft)")
    args = parser.parse_args(argv)
    kinds = tuple(k for k in args.kinds.split(",") if k)
    loaded = load_model(args.model, install_missing=True)
    _warm_up(loaded, 10)
    draft = load_model(args.draft_model, install_missing=True) if args.draft_model else None
    tasks = collect(loaded, kinds, args.per_kind, args.seed, progress=lambda line: print(line, file=sys.stderr, flush=True),
                    draft=draft)
    longest = list(max(tasks, key=lambda t: len(t.ids)).ids)
    costs = pass_costs(loaded, longest, most_rows=9)
    table = {policy.label(): {kind: round(predicted_speedup([t for t in tasks if kind in ("all", t.kind)], costs, policy), 3)
                              for kind in (*kinds, "all")} for policy in POLICIES}
    slope = (costs[9] - costs[1]) / 8  # a tree can pass 9 rows: price those on the measured line
    priced = {**{rows: costs[1] + slope * (rows - 1) for rows in range(10, 8 * 4 + 2)}, **costs}
    trees = {policy.label(): {f"width {width}": round(predicted_speedup(tasks, priced, policy, width), 3) for width in (1, 2, 3, 4)}
             for policy in (LookupPolicy(max_draft=8), LookupPolicy(max_draft=8, first_draft=2))}
    report = {"bench": "lookup-replay", "model": args.model, "seed": args.seed, "per_kind": args.per_kind,
              "pass_ms_by_rows": {rows: round(s * 1000, 1) for rows, s in costs.items()}, "predicted_speedup": table,
              "tree_predicted_speedup": trees}
    if draft is not None:
        report.update(draft_report(tasks, kinds, priced, pass_costs(draft, longest, most_rows=9), SpeculationSettings()))
    print(json.dumps(report, indent=1))
    return 0


def draft_report(tasks: list[ReplayTask], kinds: tuple[str, ...], costs: dict[int, float], draft_costs: dict[int, float],
                 settings: SpeculationSettings) -> dict:
    """The draft model's and lookup-or-draft's predicted speed-ups at the engine's settings, and the draft step
    cost (ms; every row count scaled alike) at which drafting alone would match lookup's replayed speed-up
    (0: not even free drafts would; its measured cost: it already does). Combined drafts whole lookup matches,
    as ``engine.speculate.Combined`` does."""
    lookup = LookupPolicy(max_draft=settings.lookup_max_draft, first_draft=settings.lookup_first_draft,
                          min_ngram=settings.lookup_min_ngram, priced=settings.lookup_first_draft is None)

    def speedup(kind: str, scale: float = 1.0, policy: LookupPolicy | None = None) -> float:
        scaled = {rows: s * scale for rows, s in draft_costs.items()}
        return predicted_draft_speedup([t for t in tasks if kind in ("all", t.kind)], costs, scaled, settings.draft_max,
                                       settings.draft_min_confidence, policy, settings.combined_min_lookup)

    target = predicted_speedup(tasks, costs, lookup)
    low, high = 0.0, 1.0  # the scale of the draft's costs at which drafting alone matches lookup (1.0: it already does)
    for _ in range(20):
        middle = (low + high) / 2
        low, high = (middle, high) if speedup("all", middle) >= target else (low, middle)
    return {"draft_pass_ms_by_rows": {rows: round(s * 1000, 1) for rows, s in draft_costs.items()},
            "draft_predicted_speedup": {kind: round(speedup(kind), 3) for kind in (*kinds, "all")},
            "combined_predicted_speedup": {kind: round(speedup(kind, policy=lookup), 3) for kind in (*kinds, "all")},
            "lookup_predicted_speedup": round(target, 3),
            "draft_step_ms_to_match_lookup": round(low * draft_costs[1] * 1000, 1)}


if __name__ == "__main__":
    raise SystemExit(main())
