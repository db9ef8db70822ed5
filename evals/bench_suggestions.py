"""``livefim bench suggestions``: k alternatives by superposed decoding vs k sampled passes vs beam search.

Why HumanEval infilling: an alternative is only worth cycling to if it can be
right, and these holes have tests. Single-line holes are posed as ``livefim
eval fim`` poses them (cursor on an empty line, line scope). For each task and each k, every method
starts from the same prefilled prompt (forked), and we record the time to all
k suggestions, whether any of them passes the tests (best-of-k), whether the
first one does, and how many are distinct. Greedy decoding (one suggestion)
is the time reference: the target is k = 3 in at most 1.5x its time.

Methods:

* ``superposed`` — ``engine.superpose`` (one pass per step), with the n-gram
  filter built from the prompt;
* ``sampled`` — k separate passes, temperature 0.8, top-p 0.95, seeds 0..k-1;
* ``beam`` — beam search of width k (k rows per pass), finished hypotheses
  ranked by log probability.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Callable

import torch

from cache import kv
from engine.decode import decode
from engine.prompt import PromptBudget, build_fim_prompt
from engine.runtime import LoadedModel, load_model
from engine.stops import CompletionContext, StopRules, finalize
from engine.superpose import NgramModel, superposed_decode
from engine.types import CompletionOptions, Scope
from evals.machine import run_facts

METHODS = ("superposed", "sampled", "beam")


@torch.inference_mode()
def beam_search(loaded: LoadedModel, rows: list, last_id: int, context: CompletionContext, k: int, max_tokens: int) -> list[tuple[str, float]]:
    """Width-``k`` beam search from a prefilled cache (``rows``) and the prompt's last token: (text, log p), best first."""
    model, tokenizer, stop_ids = loaded.model, loaded.tokenizer, loaded.stop_token_ids
    cache = kv.from_snapshot(model.config, rows)
    logits = model(input_ids=torch.tensor([[last_id]]), past_key_values=cache, use_cache=True).logits[:, -1].float()
    beams: list[tuple[list[int], float]] = [([], 0.0)]
    finished: list[tuple[str, float]] = []
    rules = StopRules(context)
    for _ in range(max_tokens):
        logp = torch.log_softmax(logits, dim=-1)  # [beams, V]
        totals = torch.tensor([score for _, score in beams])[:, None] + logp
        flat = torch.topk(totals.flatten(), 2 * k)
        chosen: list[tuple[int, list[int], float]] = []
        for value, index in zip(flat.values.tolist(), flat.indices.tolist()):
            beam, token = divmod(index, logp.shape[-1])
            tokens = beams[beam][0] + ([] if token in stop_ids else [token])
            text, reason = rules.check(tokenizer.decode(tokens, skip_special_tokens=False))
            if token in stop_ids or reason is not None or len(tokens) >= max_tokens:
                finished.append((finalize(text, context), value))
            else:
                chosen.append((beam, tokens, value))
            if len(chosen) == k:
                break
        best_finished = max((score for _, score in finished), default=-math.inf)
        if not chosen or (len(finished) >= k and best_finished >= max(score for *_, score in chosen)):
            break
        order = torch.tensor([beam for beam, _, _ in chosen])
        cache = kv.from_snapshot(model.config, [(keys.index_select(0, order), values.index_select(0, order))
                                                for keys, values in kv.snapshot(cache)])
        beams = [(tokens, score) for _, tokens, score in chosen]
        step = torch.tensor([[tokens[-1]] for _, tokens, _ in chosen])
        logits = model(input_ids=step, past_key_values=cache, use_cache=True).logits[:, -1].float()
    ranked: dict[str, float] = {}
    for text, score in sorted(finished, key=lambda item: item[1], reverse=True):
        ranked.setdefault(text, score)
    return list(ranked.items())[:k]


def bench_suggestions(
    model: str | None = None,
    *,
    ks: tuple[int, ...] = (2, 3, 5),
    limit: int = 30,
    seed: int = 0,
    methods: tuple[str, ...] = METHODS,
    ngram_weight: float = 0.3,
    max_tokens: int = 48,
    device: str | None = None,
    loaded: LoadedModel | None = None,
    run_tests: bool = True,
    progress: Callable[[dict], None] | None = None,
) -> dict:
    from evals.humaneval import exact_match, load_tasks, passes

    target = loaded or load_model(model, device, install_missing=True)
    records: list[dict] = []
    for task in load_tasks("singleline", limit, seed):
        # posed as ``livefim eval fim`` does: the cursor on an empty line, one line to write
        prompt = build_fim_prompt(target.tokenizer, target.family, task.prompt, "\n" + task.suffix, path="humaneval.py",
                                  budget=PromptBudget())
        ids = prompt.token_ids
        context = CompletionContext(prefix=prompt.prefix, suffix=prompt.suffix, scope=Scope.LINE)
        cache = kv.new_cache(target.model.config)
        kv.encode_chunked(target.model, cache, ids[:-1])
        rows = kv.snapshot(cache)

        def fork():
            return kv.from_snapshot(target.model.config, rows)

        def judge(texts: list[str]) -> dict:
            ok = [passes(task, t + "\n") for t in texts] if run_tests else [False] * len(texts)
            return {"best_of_k_pass": any(ok), "top1_pass": bool(ok and ok[0]),
                    "best_of_k_exact": any(exact_match(t + "\n", task.canonical_solution) for t in texts),
                    "distinct": len(set(texts))}

        started = time.perf_counter()
        *_, greedy = decode(target, [ids[-1]], context, CompletionOptions(max_tokens=max_tokens), cache=fork())
        greedy_s = time.perf_counter() - started
        base = {"task": task.task_id, "greedy_s": round(greedy_s, 3)}
        records.append({**base, "method": "greedy", "k": 1, "seconds": round(greedy_s, 3), **judge([greedy.text])})
        for k in ks:
            for method in methods:
                started = time.perf_counter()
                if method == "superposed":
                    result = superposed_decode(target, [ids[-1]], context, k, max_tokens, cache=fork(),
                                               ngrams=NgramModel([ids[:-1]], order=3), ngram_weight=ngram_weight)
                    texts = [s.text for s in result.suggestions]
                elif method == "sampled":
                    texts = []
                    for sample in range(k):
                        options = CompletionOptions(max_tokens=max_tokens, temperature=0.8, top_p=0.95, seed=sample)
                        *_, final = decode(target, [ids[-1]], context, options, cache=fork())
                        texts.append(final.text)
                elif method == "beam":
                    texts = [text for text, _ in beam_search(target, rows, ids[-1], context, k, max_tokens)]
                else:
                    raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
                seconds = time.perf_counter() - started
                record = {**base, "method": method, "k": k, "seconds": round(seconds, 3),
                          "time_vs_greedy": round(seconds / greedy_s, 2), **judge(texts)}
                records.append(record)
                if progress:
                    progress(record)
    return {
        "bench": "suggestions",
        **run_facts(target),
        "tasks": limit,
        "seed": seed,
        "ngram_weight": ngram_weight,
        "greedy": _summary([r for r in records if r["method"] == "greedy"]),
        "results": {f"{method}@{k}": _summary([r for r in records if r["method"] == method and r["k"] == k])
                    for k in ks for method in methods},
    }


def _summary(rows: list[dict]) -> dict:
    if not rows:
        return {}
    n = len(rows)
    greedy_total = sum(r["greedy_s"] for r in rows)
    return {
        "tasks": n,
        "time_vs_greedy": round(sum(r["seconds"] for r in rows) / greedy_total, 2),  # summed time over summed greedy time
        "median_s": round(statistics.median(r["seconds"] for r in rows), 2),
        "best_of_k_pass": round(sum(r["best_of_k_pass"] for r in rows) / n, 3),
        "top1_pass": round(sum(r["top1_pass"] for r in rows) / n, 3),
        "best_of_k_exact": round(sum(r["best_of_k_exact"] for r in rows) / n, 3),
        "mean_distinct": round(sum(r["distinct"] for r in rows) / n, 2),
    }
