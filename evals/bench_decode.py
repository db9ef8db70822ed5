"""``livefim bench decode``: plain vs speculative decoding, side by side on the same prompts.

Why these tasks: speculation pays off exactly when the text is predictable from
what is already there, so it must be measured on real completions, not on
synthetic prompts. Four kinds:

* ``humaneval-line`` / ``humaneval-block``: HumanEval single-line and
  multi-line infilling holes;
* ``repo-line``: held-out lines of real packages (``evals.repo_tasks``:
  standard-library packages and the PyPI releases of ``evals/repo_suite.toml``);
* ``repo-block``: the same places with the whole run of lines at the line's
  indentation held out (2-6 lines), completed as a block.

Every arm decodes the same FIM prompt (the product's windowed prompt) from the
same prefilled cache, one arm after the other, so ratios are measured side by
side. The prompt's prefill is shared and reported apart: in the engine a warm
document session has it already. ``suggestion_s`` is the rest, the time from
a ready prompt to the full suggestion. Greedy outputs are compared token for
token with ``plain`` (``identical`` must be 1.0).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from cache import kv
from engine.decode import decode
from context.index import build_index
from engine.prompt import PromptBudget, build_fim_prompt, count_text_tokens, encode_segments, repo_format
from engine.repo_context import RepoContext
from engine.runtime import LoadedModel, load_model
from engine.pass_costs import pass_costs_for
from engine.speculate import AcceptanceTally, Combined, DraftModel, DraftPricing, PromptLookup, Proposer, SpeculationSettings
from engine.stops import CompletionContext, decide_scope
from engine.types import CompletionOptions, Scope
from evals.machine import run_facts

KINDS = ("humaneval-line", "humaneval-block", "repo-line", "repo-block")
ARMS = ("plain", "lookup", "draft", "combined")


@dataclass(frozen=True)
class DecodeTask:
    kind: str
    name: str
    path: str
    prefix: str
    suffix: str
    max_tokens: int
    repo: str = ""  # the package root of a repository task (its index gives context)


def decode_tasks(kinds: tuple[str, ...], per_kind: int, seed: int = 0) -> list[DecodeTask]:
    """``per_kind`` tasks of each kind, the same for the same arguments."""
    tasks: list[DecodeTask] = []
    for kind in kinds:
        if kind.startswith("humaneval"):
            from evals.humaneval import load_tasks

            infill = load_tasks("singleline" if kind.endswith("line") else "multiline", per_kind, seed)
            tasks += [DecodeTask(kind, t.task_id, "humaneval.py", t.prompt, t.suffix, 64 if kind.endswith("line") else 128)
                      for t in infill]
        elif kind in ("repo-line", "repo-block"):
            tasks += _repo_tasks(kind, per_kind, seed)
        else:
            raise ValueError(f"unknown task kind {kind!r}; choose from {', '.join(KINDS)}")
    return tasks


def _repo_tasks(kind: str, count: int, seed: int) -> list[DecodeTask]:
    from evals.repo import pypi_roots
    from evals.repo_tasks import build_repo_tasks, stdlib_roots

    found: list[DecodeTask] = []
    for task in build_repo_tasks(stdlib_roots() + pypi_roots(), count * 3, seed):
        name = f"{Path(task.repo).name}/{task.file}:{task.line + 1}"
        if kind == "repo-line":
            found.append(DecodeTask(kind, name, task.file, task.prefix, task.suffix, 48, task.repo))
        else:
            lines = (task.prefix + task.target + task.suffix).split("\n")
            held = _block_at(lines, task.line)
            if held < 2:
                continue
            suffix = "\n" + "\n".join(lines[task.line + held :])
            found.append(DecodeTask(kind, name, task.file, task.prefix, suffix, 128, task.repo))
        if len(found) == count:
            break
    return found


def _block_at(lines: list[str], start: int, most: int = 6) -> int:
    """How many lines from ``start`` stay at or deeper than its indentation (blank lines end the run)."""
    indent = len(lines[start]) - len(lines[start].lstrip())
    count = 0
    for line in lines[start : start + most]:
        if not line.strip() or len(line) - len(line.lstrip()) < indent:
            break
        count += 1
    return count


def fim_prompt(
    loaded: LoadedModel, task: DecodeTask, contexts: dict[str, RepoContext] | None = None,
    budget: PromptBudget = PromptBudget(),
) -> tuple[list[int], int, CompletionContext]:
    """The product's windowed FIM prompt for ``task``: its token ids, where ``<|fim_suffix|>`` sits, and the
    stop rules' context. With ``contexts`` (package root -> its repository context, filled as needed), a
    repository task's prompt opens with the context the engine would retrieve for it. ``budget`` bounds the
    prefix and suffix (a document session holds up to 8,192 tokens of the file: a larger budget poses that)."""
    prompt = build_fim_prompt(loaded.tokenizer, loaded.family, task.prefix, task.suffix, path=task.path, budget=budget)
    ids = prompt.token_ids
    if contexts is not None and task.repo:
        if task.repo not in contexts:
            contexts[task.repo] = RepoContext(build_index(Path(task.repo)))
        choice = contexts[task.repo].choose(task.path, task.prefix, task.suffix,
                                            lambda text: count_text_tokens(loaded.tokenizer, text), repo_format(loaded.family))
        if choice is not None:
            ids = encode_segments(loaded.tokenizer, choice.segments) + ids
    marker = ids.index(loaded.tokenizer.convert_tokens_to_ids(loaded.family.fim_suffix_token))
    context = CompletionContext(prefix=prompt.prefix, suffix=prompt.suffix, scope=decide_scope(prompt.prefix, prompt.suffix, Scope.AUTO))
    return ids, marker, context


def prompt_lookup(prompt_ids: list[int], marker: int, *, max_draft: int, min_ngram: int, first_draft: int | None,
                  pricing: DraftPricing | None = None) -> PromptLookup:
    """Prompt lookup over a FIM prompt whose ``<|fim_suffix|>`` is at ``marker``: the prefix and the suffix
    are its corpus (the engine adds repository context and the last suggestion)."""
    return PromptLookup([prompt_ids[:marker], prompt_ids[marker + 1 : -1]], max_draft=max_draft, min_ngram=min_ngram,
                        first_draft=first_draft, pricing=pricing)


def make_proposer(
    arm: str, prompt_ids: list[int], marker: int, draft: LoadedModel | None, draft_rows: list | None,
    settings: SpeculationSettings, pricing: DraftPricing | None = None,
) -> Proposer | None:
    """The arm's proposer over a FIM prompt whose ``<|fim_suffix|>`` is at ``marker``. ``pricing`` sizes the
    lookup arm's drafts as the engine does, unless ``settings.lookup_first_draft`` asks for the growing rule."""
    if arm == "plain":
        return None
    priced = arm == "lookup" and settings.lookup_first_draft is None
    lookup = prompt_lookup(prompt_ids, marker, max_draft=settings.lookup_max_draft, min_ngram=settings.lookup_min_ngram,
                           first_draft=settings.lookup_first_draft if arm == "lookup" else None,
                           pricing=pricing if priced else None)
    if arm == "lookup":
        return lookup
    assert draft is not None and draft_rows is not None
    model = DraftModel(draft.model, kv.from_snapshot(draft.model.config, draft_rows), [prompt_ids[-1]],
                       max_draft=settings.draft_max, min_confidence=settings.draft_min_confidence)
    if arm == "draft":
        return model
    if arm == "combined":
        return Combined(lookup, model, min_lookup=settings.combined_min_lookup)
    raise ValueError(f"unknown arm {arm!r}; choose from {', '.join(ARMS)}")


@torch.inference_mode()
def bench_decode(
    model: str | None = "qwen2.5-coder-1.5b",
    draft_model: str | None = "qwen2.5-coder-0.5b",
    *,
    kinds: tuple[str, ...] = KINDS,
    per_kind: int = 5,
    seed: int = 0,
    arms: tuple[str, ...] = ARMS,
    device: str | None = None,
    settings: SpeculationSettings = SpeculationSettings(),
    progress: Callable[[dict], None] | None = None,
    loaded: LoadedModel | None = None,
    draft_loaded: LoadedModel | None = None,
    repo_context: bool = False,
    budget: PromptBudget = PromptBudget(),
) -> dict:
    """Run every arm on every task; ``loaded``/``draft_loaded`` replace loading by name (tests).

    ``repo_context`` poses repository tasks as the engine does with ``--repo``: retrieved context in front,
    which lookup then searches too. ``budget``: the prompt's prefix and suffix tokens at most."""
    if arms[0] != "plain":
        arms = ("plain", *[a for a in arms if a != "plain"])  # the reference comes first
    target = loaded or load_model(model, device, install_missing=True)
    costs = pass_costs_for(target) if "lookup" in arms and settings.lookup_first_draft is None else None
    tally = AcceptanceTally()  # one across the tasks, as an engine keeps one across its requests
    needs_draft = any(a in ("draft", "combined") for a in arms)
    draft = (draft_loaded or load_model(draft_model, device, install_missing=True)) if needs_draft else None
    if draft is not None and draft.tokenizer.get_vocab() != target.tokenizer.get_vocab():
        raise ValueError(f"{draft.name} cannot draft for {target.name}: their tokenizers differ")
    for loaded_model in (target, draft):
        if loaded_model is not None:
            _warm_up(loaded_model, settings.lookup_max_draft + 2)
    records: list[dict] = []
    contexts: dict[str, RepoContext] | None = {} if repo_context else None
    for task in decode_tasks(kinds, per_kind, seed):
        ids, marker, context = fim_prompt(target, task, contexts, budget)
        options = CompletionOptions(max_tokens=task.max_tokens)
        target_rows, prefill_s = _prefill(target, ids[:-1])
        draft_rows, draft_prefill_s = _prefill(draft, ids[:-1]) if draft is not None else (None, 0.0)
        plain_ids: tuple[int, ...] | None = None
        pricing = DraftPricing(costs.relative(len(ids)), tally) if costs else None
        for arm in arms:
            proposer = make_proposer(arm, ids, marker, draft, draft_rows, settings, pricing)
            started = time.perf_counter()
            final = None
            for final in decode(target, [ids[-1]], context, options, cache=kv.from_snapshot(target.model.config, target_rows),
                                proposer=proposer, history=ids[:marker]):
                pass
            assert final is not None
            seconds = time.perf_counter() - started
            plain_ids = final.token_ids if arm == "plain" else plain_ids
            record = {
                "kind": task.kind, "task": task.name, "arm": arm, "prompt_tokens": len(ids),
                "tokens": final.generated_tokens, "suggestion_s": round(seconds, 3),
                "passes": final.target_forwards + 1, "drafted": final.drafted_tokens, "accepted": final.accepted_tokens,
                "identical": final.token_ids == plain_ids, "prefill_s": round(prefill_s, 2),
                "draft_prefill_s": round(draft_prefill_s, 2) if arm in ("draft", "combined") else 0.0,
            }
            records.append(record)
            if progress:
                progress(record)
    return {
        "bench": "decode",
        **run_facts(target),
        "draft_model": draft.name if draft is not None else None,
        "settings": vars(settings),
        "pass_costs": costs.to_json() if costs else None,
        "per_kind": per_kind,
        "seed": seed,
        "repo_context": repo_context,
        "prompt_budget": vars(budget),
        "by_kind": {kind: summarize([r for r in records if r["kind"] == kind], arms) for kind in kinds},
        "all": summarize(records, arms),
    }


def _warm_up(loaded: LoadedModel, most_rows: int) -> None:
    """One pass of each row count a step can feed: oneDNN builds its kernels per shape on first use,
    which must not be charged to whichever arm meets a shape first."""
    for rows in range(1, most_rows + 1):
        loaded.model(input_ids=torch.zeros((1, rows), dtype=torch.long, device=loaded.device), use_cache=False)


def _prefill(loaded: LoadedModel, ids: list[int]) -> tuple[list, float]:
    started = time.perf_counter()
    cache = kv.new_cache(loaded.model.config)
    kv.encode_chunked(loaded.model, cache, ids)
    return kv.snapshot(cache), time.perf_counter() - started


def summarize(records: list[dict], arms: tuple[str, ...]) -> dict:
    """Per arm: throughput, tokens per target pass, acceptance, and the ratio to plain on the same tasks."""
    summary = {}
    plain_s = sum(r["suggestion_s"] for r in records if r["arm"] == "plain")
    for arm in arms:
        rows = [r for r in records if r["arm"] == arm]
        if not rows:
            continue
        tokens, seconds = sum(r["tokens"] for r in rows), sum(r["suggestion_s"] for r in rows)
        passes, drafted, accepted = (sum(r[k] for r in rows) for k in ("passes", "drafted", "accepted"))
        summary[arm] = {
            "tasks": len(rows),
            "tokens": tokens,
            "tokens_per_s": round(tokens / seconds, 2) if seconds else None,
            "ms_per_token": round(seconds * 1000 / tokens, 1) if tokens else None,
            "tokens_per_pass": round(tokens / passes, 2) if passes else None,
            "mean_accepted_per_pass": round(accepted / max(1, passes - len(rows)), 2),
            "acceptance_rate": round(accepted / drafted, 3) if drafted else None,
            "suggestion_s_p50": round(statistics.median(r["suggestion_s"] for r in rows), 2),
            "speedup_vs_plain": round(plain_s / seconds, 2) if seconds else None,
            "identical_to_plain": round(sum(r["identical"] for r in rows) / len(rows), 3),
        }
    return summary
