"""``livefim bench latency``: a real edit session typed into ``livefim lsp``, as an editor would send it.

Why replay typing: what a user feels is the time from a keystroke to the
suggestion, under real conditions: requests superseded by the next keystroke,
the debounce, the engine patching its caches between keys, typed-ahead hits.
Only a session with a human cadence shows them together.

The session: the diff between two releases of a PyPI package (default
``requests`` 2.31.0 -> 2.32.0, from ``evals/edit_suite.toml``). Files are
opened at the old release; each hunk deletes the old lines in one edit, then
types the new ones character by character, asking ``textDocument/inlineCompletion``
after every key (as VS Code does), never accepting (the user types what they
actually wrote). Gaps between keys are log-normal around ``key_ms`` (seeded),
longer at line ends, and there is a pause before each hunk (moving the cursor,
reading).

Reported (JSON): keystroke-to-suggestion latency p50/p95 over requests that got
a suggestion (and separately over the requests sent after the last key before a
pause: what a user waiting for a suggestion sees), the share of requests that
were cancelled (superseded), the typed-ahead hit rate, and the share of
suggestions whose start is what the user typed next (they would have helped).
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from lsprotocol import types as lsp

from evals.edits import fetch_release, hunks, python_files

PAUSE_S = 0.5  # a gap at least this long counts as a pause (the user waits for a suggestion)


@dataclass(frozen=True)
class Key:
    """One simulated keystroke: insert ``text`` at (line, column) after waiting ``wait_s``."""

    uri: str
    line: int
    column: int  # code points (the bench sends UTF-32 positions: the server negotiates them)
    text: str
    wait_s: float
    upcoming: str  # what the user types next on this hunk, from this key on (for "useful")


@dataclass(frozen=True)
class Deletion:
    uri: str
    start_line: int
    end_line: int  # exclusive: whole lines removed
    wait_s: float


def session(old: dict[str, str], new: dict[str, str], *, max_keys: int, seed: int, key_ms: float, files: int) -> tuple[dict[str, str], list]:
    """(files opened, steps): deletions and keystrokes that turn the old files into the new ones, hunk by hunk."""
    rng = random.Random(seed)
    changed = [p for p in sorted(old) if p in new and old[p] != new[p]]
    rng.shuffle(changed)
    opened: dict[str, str] = {}
    steps: list = []
    keys = 0
    for path in changed[:files]:
        uri = f"file:///livefim-bench/{path}"
        opened[uri] = old[path]
        offset = 0  # lines added minus removed so far in this file
        for hunk in hunks(old[path], new[path]):
            if keys >= max_keys:
                break
            line = hunk.old_start + offset
            pause = rng.uniform(1.0, 2.5)
            if hunk.old_end > hunk.old_start:
                steps.append(Deletion(uri, line, line + hunk.old_end - hunk.old_start, pause))
                pause = rng.uniform(0.2, 0.6)
            typed = "\n".join(hunk.new_lines) + ("\n" if hunk.new_lines else "")
            row, column = line, 0
            for i, char in enumerate(typed):
                wait = pause if i == 0 else rng.lognormvariate(math.log(key_ms / 1000), 0.45)
                if i > 0 and typed[i - 1] == "\n":
                    wait += rng.uniform(0.15, 0.6)  # end of a line: a beat to think
                steps.append(Key(uri, row, column, char, wait, typed[i:]))
                keys += 1
                if char == "\n":
                    row, column = row + 1, 0
                else:
                    column += 1
            offset += len(hunk.new_lines) - (hunk.old_end - hunk.old_start)
        if keys >= max_keys:
            break
    return opened, steps


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))], 1)


async def replay(opened: dict[str, str], steps: list, server_command: list[str], env: dict[str, str],
                 progress: Callable[[int, int], None] | None = None, warm_up_timeout_s: float = 900.0) -> dict:
    """Drive ``livefim lsp`` through the steps in real time; returns the measurements."""
    from pygls.lsp.client import LanguageClient

    client = LanguageClient("livefim-bench", "0")
    ready = asyncio.Event()
    not_ready: list[str] = []

    @client.feature(lsp.WINDOW_LOG_MESSAGE)
    def _log(params: lsp.LogMessageParams) -> None:
        if params.message.startswith("livefim: ready"):
            ready.set()
        elif params.message.startswith("livefim: engine not ready"):
            not_ready.append(params.message)
            ready.set()

    await client.start_io(server_command[0], *server_command[1:], env=env)
    capabilities = lsp.ClientCapabilities(
        general=lsp.GeneralClientCapabilities(position_encodings=[lsp.PositionEncodingKind.Utf32]),
        text_document=lsp.TextDocumentClientCapabilities(inline_completion=lsp.InlineCompletionClientCapabilities()),
    )
    await client.initialize_async(lsp.InitializeParams(capabilities=capabilities, initialization_options={
        "telemetry": {"enabled": False}}))
    client.initialized(lsp.InitializedParams())
    versions = {}
    for uri, text in opened.items():
        versions[uri] = 1
        client.text_document_did_open(lsp.DidOpenTextDocumentParams(
            text_document=lsp.TextDocumentItem(uri=uri, language_id="python", version=1, text=text)))

    async def ask(uri: str, line: int, column: int) -> tuple[str, float]:
        sent = time.perf_counter()
        result = await client.text_document_inline_completion_async(lsp.InlineCompletionParams(
            text_document=lsp.TextDocumentIdentifier(uri=uri), position=lsp.Position(line=line, character=column),
            context=lsp.InlineCompletionContext(trigger_kind=lsp.InlineCompletionTriggerKind.Automatic)))
        items = result.items if result is not None else []
        return (items[0].insert_text if items else ""), (time.perf_counter() - sent) * 1000

    # warm up: the model loads (the server logs "livefim: ready") and each file's KV session is encoded
    # before the user starts typing. An empty suggestion is a fine answer here: at the top of a file the
    # model may well have nothing to say.
    started = time.perf_counter()
    try:
        await asyncio.wait_for(ready.wait(), warm_up_timeout_s)
    except asyncio.TimeoutError:
        raise RuntimeError(f"livefim lsp was not ready after {warm_up_timeout_s:.0f} s") from None
    if not_ready:
        raise RuntimeError(not_ready[0])
    for uri in opened:
        await ask(uri, 0, 0)
    warm_up_ms = round((time.perf_counter() - started) * 1000, 1)

    pending: list[tuple[asyncio.Task, bool, str]] = []
    for index, step in enumerate(steps):
        await asyncio.sleep(step.wait_s)
        versions[step.uri] += 1
        if isinstance(step, Deletion):
            change = lsp.TextDocumentContentChangePartial(
                range=lsp.Range(start=lsp.Position(line=step.start_line, character=0), end=lsp.Position(line=step.end_line, character=0)),
                text="")
            client.text_document_did_change(lsp.DidChangeTextDocumentParams(
                text_document=lsp.VersionedTextDocumentIdentifier(uri=step.uri, version=versions[step.uri]), content_changes=[change]))
            continue
        at = lsp.Position(line=step.line, character=step.column)
        client.text_document_did_change(lsp.DidChangeTextDocumentParams(
            text_document=lsp.VersionedTextDocumentIdentifier(uri=step.uri, version=versions[step.uri]),
            content_changes=[lsp.TextDocumentContentChangePartial(range=lsp.Range(start=at, end=at), text=step.text)]))
        after_line, after_column = (step.line + 1, 0) if step.text == "\n" else (step.line, step.column + 1)
        next_wait = steps[index + 1].wait_s if index + 1 < len(steps) else PAUSE_S
        before_pause = next_wait >= PAUSE_S
        pending.append((asyncio.ensure_future(ask(step.uri, after_line, after_column)), before_pause, step.upcoming[1:]))
        if progress:
            progress(index + 1, len(steps))
    results = [(await task, before_pause, upcoming) for task, before_pause, upcoming in pending]
    stats = await client.protocol.send_request_async("livefim/stats", {})
    stats = stats._asdict() if hasattr(stats, "_asdict") else dict(stats)
    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()

    answered = [(latency, before, text, upcoming) for (text, latency), before, upcoming in results if text]
    latencies = [latency for latency, _, _, _ in answered]
    pause_latencies = [latency for latency, before, _, _ in answered if before]
    useful = [text for _, _, text, upcoming in answered if _helps(text, upcoming)]
    requests = len(results)
    return {
        "keystrokes": requests,
        "warm_up_ms": warm_up_ms,
        "requests": requests,
        "suggestions": len(answered),
        "latency_ms_p50": _percentile(latencies, 0.5),
        "latency_ms_p95": _percentile(latencies, 0.95),
        "pause_requests": sum(1 for _, before, _ in results if before),
        "pause_latency_ms_p50": _percentile(pause_latencies, 0.5),
        "pause_latency_ms_p95": _percentile(pause_latencies, 0.95),
        "cancelled": stats["cancelled"],
        "cancelled_share": round(stats["cancelled"] / max(1, stats["requests"]), 4),
        "engine_requests": stats["engine_requests"],
        "typed_ahead_hits": stats["typed_ahead_hits"],
        "typed_ahead_hit_rate": round(stats["typed_ahead_hits"] / max(1, stats["requests"]), 4),
        "useful_suggestions": len(useful),
        "useful_share": round(len(useful) / max(1, len(answered)), 4),
    }


def _helps(suggestion: str, upcoming: str, min_chars: int = 4) -> bool:
    """The suggestion's start is what the user typed next (at least ``min_chars`` of it, or all of it)."""
    first = suggestion.split("\n")[0] if suggestion.strip() else suggestion
    matched = 0
    for a, b in zip(suggestion, upcoming):
        if a != b:
            break
        matched += 1
    return matched >= min(min_chars, len(suggestion)) and matched > 0 and len(first) > 0


def bench_latency(package: str = "requests", old: str = "2.31.0", new: str = "2.32.0", *, max_keys: int = 400, seed: int = 0,
                  key_ms: float = 140.0, files: int = 3, model: str | None = None, engine: str | None = None,
                  progress: Callable[[int, int], None] | None = None) -> dict:
    """Replay ``package`` old -> new through ``livefim lsp`` (embedded engine unless ``engine``)."""
    old_files = python_files(fetch_release(package, old))
    new_files = python_files(fetch_release(package, new))
    opened, steps = session(old_files, new_files, max_keys=max_keys, seed=seed, key_ms=key_ms, files=files)
    command = [sys.executable, "-m", "livefim.cli", "lsp"]
    if engine:
        command += ["--engine", engine]
    if model:
        command += ["--model", model]
    env = dict(os.environ, OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "ACTIVE"))
    wall = time.perf_counter()
    measured = asyncio.run(replay(opened, steps, command, env, progress))
    gaps = [s.wait_s for s in steps if isinstance(s, Key)]
    return {
        "bench": "latency",
        "release": f"{package} {old} -> {new}",
        "files": sorted(uri.split("/livefim-bench/", 1)[1] for uri in opened),
        "model": model or "default",
        "engine": engine or "embedded",
        "seed": seed,
        "key_gap_ms_median": round(statistics.median(gaps) * 1000, 1) if gaps else None,
        **measured,
        "wall_seconds": round(time.perf_counter() - wall, 1),
    }


__all__ = ["Deletion", "Key", "bench_latency", "replay", "session"]
