"""``livefim bench model``: raw prefill and decode speed at a given context length.

Why real code: token statistics (and so speed per character) depend on the
text; we feed the standard library's own source, cut to exactly N tokens.
Prefill is one forward with ``logits_to_keep=1``; decode is greedy steps on
top of that cache (with room reserved, as ``engine/decode.py`` does), timed per
token.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import signal
import sysconfig
import time
from pathlib import Path
from typing import Any, Callable

import torch
from transformers import DynamicCache

from cache import kv
from engine.install import installed
from engine.runtime import load_model
from evals.machine import cpu_linear_description, machine_facts


def stdlib_code_tokens(tokenizer, count: int) -> list[int]:
    """``count`` tokens of real Python: stdlib modules, concatenated in a fixed order."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    ids: list[int] = []
    for name in ("argparse.py", "dataclasses.py", "typing.py", "inspect.py", "pathlib.py"):
        ids += tokenizer((stdlib / name).read_text(encoding="utf-8"), add_special_tokens=False).input_ids
        if len(ids) >= count:
            break
    assert len(ids) >= count, len(ids)
    return ids[:count]


@torch.inference_mode()
def bench_model(
    name: str, contexts: list[int], decode_tokens: int = 32, device: str | None = None, repeats: int = 1,
    cpu_linear: str | None = None, verify_tokens: int = 8,
) -> dict:
    """Prefill and decode speed, plus one ``verify_tokens``-token pass (what a speculative step costs)."""
    loaded = load_model(name, device, install_missing=True, cpu_linear=cpu_linear)
    model = loaded.model
    results = []
    for context in contexts:
        ids = torch.tensor([stdlib_code_tokens(loaded.tokenizer, context)], device=loaded.device)
        best_prefill, best_decode, best_verify = float("inf"), float("inf"), float("inf")
        for _ in range(repeats):
            cache = DynamicCache(config=model.config)
            started = time.perf_counter()
            logits = model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1).logits
            prefill_s = time.perf_counter() - started
            kv.reserve(cache, decode_tokens + verify_tokens)  # as the decode loop does
            token = logits[:, -1].argmax(-1, keepdim=True)
            started = time.perf_counter()
            for _ in range(decode_tokens):
                logits = model(input_ids=token, past_key_values=cache, use_cache=True).logits
                token = logits[:, -1].argmax(-1, keepdim=True)
            decode_s = time.perf_counter() - started
            started = time.perf_counter()
            model(input_ids=ids[:, :verify_tokens], past_key_values=cache, use_cache=True, logits_to_keep=verify_tokens)
            verify_s = time.perf_counter() - started
            best_prefill, best_decode = min(best_prefill, prefill_s), min(best_decode, decode_s)
            best_verify = min(best_verify, verify_s)
        results.append({
            "context_tokens": context,
            "prefill_s": round(best_prefill, 2),
            "prefill_tokens_per_s": round(context / best_prefill, 1),
            "decode_ms_per_token": round(best_decode * 1000 / decode_tokens, 1),
            f"pass_ms_{verify_tokens}_tokens": round(best_verify * 1000, 1),
        })
    found = installed(name)
    return {
        "bench": "model",
        "model": name,
        "device": str(loaded.device),
        "dtype": str(model.get_input_embeddings().weight.dtype),
        "cpu_linear": cpu_linear_description(loaded.cpu_linear),
        "threads": torch.get_num_threads(),
        **machine_facts(),
        "install_seconds": found.install_seconds if found else None,
        "results": results,
    }


def bench_llamacpp(name: str, contexts: list[int], decode_tokens: int = 32, threads: int | None = None) -> dict:
    """The same measurement through llama.cpp (``pip install llama-cpp-python``) on the model's own GGUF file:
    what a user would run instead. Prefill is one ``eval`` of the prompt; decode feeds one token per step.

    It runs in a child process: a llama.cpp build can use instructions the CPU
    refuses (AMX tiles on a VM that does not enable them) and die of SIGILL,
    and that must not take the numbers already measured with it.
    """
    if importlib.util.find_spec("llama_cpp") is None:
        raise RuntimeError("llama.cpp comparison needs `pip install llama-cpp-python` (not a livefim dependency)")
    try:
        return run_isolated(_time_llamacpp, name, contexts, decode_tokens, threads or torch.get_num_threads())
    except ChildDied as died:
        hint = (": an instruction this CPU refuses; rebuild it for this machine, e.g. CMAKE_ARGS='-DGGML_NATIVE=OFF "
                "-DGGML_AVX2=ON -DGGML_AVX512=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF' pip install --force-reinstall "
                "--no-deps llama-cpp-python") if died.exitcode == -signal.SIGILL else ""
        raise RuntimeError(f"llama.cpp {died} while timing {name}{hint}") from died


class ChildDied(RuntimeError):
    """The child process of ``run_isolated`` ended without an answer; ``exitcode`` is -signal when killed."""

    def __init__(self, exitcode: int) -> None:
        self.exitcode = exitcode
        why = f"signal {signal.Signals(-exitcode).name}" if exitcode < 0 else f"exit status {exitcode}"
        super().__init__(f"died of {why}")


def run_isolated(function: Callable[..., Any], *args: Any) -> Any:
    """``function(*args)`` in a fresh (spawned) process; its result, its exception re-raised as RuntimeError,
    or ``ChildDied`` when the process ends without answering (a crash in native code)."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_answer, args=(sender, function, args), daemon=True)
    child.start()
    sender.close()
    try:
        ok, value = receiver.recv()
    except EOFError:
        child.join()
        raise ChildDied(child.exitcode or 0) from None
    child.join()
    if not ok:
        raise RuntimeError(value)
    return value


def _answer(sender: Any, function: Callable[..., Any], args: tuple) -> None:
    try:
        sender.send((True, function(*args)))
    except Exception as error:  # reported to the parent, which raises it
        sender.send((False, f"{type(error).__name__}: {error}"))


def _time_llamacpp(name: str, contexts: list[int], decode_tokens: int, threads: int) -> dict:
    from llama_cpp import Llama
    from transformers import AutoTokenizer

    from engine.install import gguf_file, model_dir

    tokenizer = AutoTokenizer.from_pretrained(model_dir(name))
    results = []
    for context in contexts:
        ids = stdlib_code_tokens(tokenizer, context + decode_tokens)
        llm = Llama(model_path=str(gguf_file(name)), n_ctx=context + decode_tokens + 16, n_threads=threads,
                    n_batch=512, verbose=False)
        started = time.perf_counter()
        llm.eval(ids[:context])
        prefill_s = time.perf_counter() - started
        started = time.perf_counter()
        for token in ids[context : context + decode_tokens]:
            llm.eval([token])
        decode_s = time.perf_counter() - started
        results.append({"context_tokens": context, "prefill_s": round(prefill_s, 2),
                        "prefill_tokens_per_s": round(context / prefill_s, 1),
                        "decode_ms_per_token": round(decode_s * 1000 / decode_tokens, 1)})
        del llm
    return {"bench": "model", "model": name, "engine": "llama.cpp (llama-cpp-python)", "threads": threads,
            **machine_facts(), "results": results}
