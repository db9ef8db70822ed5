"""``livefim eval edits``: replay real edits between two releases, predict the next line.

Why: PIE is approximate, so its quality must be measured against full
recompute on edits programmers really made. We download two consecutive
source releases of a PyPI package, diff every Python file, and replay the
hunks top to bottom. For each hunk we apply it except for its last non-blank
line, put the cursor on that (empty) line, and ask each cache mode to predict
it; then we type the real line and go on. The prompt is always the whole
document (header + prefix + <|fim_suffix|> + suffix + <|fim_middle|>).

Modes: ``recompute`` (fresh encode), ``prefix`` (a session re-encoding from the
first change), ``pie`` (a session patched by PIE, refreshed when its changed
tokens pass the staleness budget), ``pie-window`` (the same, also re-encoding
``cursor_window`` suffix rows after ``<|fim_suffix|>`` per request),
``pie-suffix`` (PIE before the cursor, then only the next 128 suffix tokens,
encoded afresh after the marker) and
``pie-norefresh`` (never refreshed: shows what the budget buys). Reported per mode: exact match, edit similarity,
top-1 agreement with recompute under teacher forcing (the recompute output fed
through each mode's cache, argmax compared position by position), and ready time.
"""

from __future__ import annotations

import difflib
import json
import subprocess
import sys
import tarfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from cache import kv
from cache.session import DocumentSession, ModelHandle, SessionPolicy
from cache.tokens import CharEdit, tokenize
from engine.decode import decode
from engine.documents import line_starts
from engine.install import cache_root
from engine.prompt import build_fim_prompt, session_header_ids
from engine.runtime import LoadedModel, load_model
from engine.stops import CompletionContext
from engine.types import CompletionOptions, Scope

SUFFIX_WINDOW = 128  # pie-suffix: suffix tokens kept, all re-encoded after the marker
MODES = ("recompute", "prefix", "pie", "pie-window", "pie-suffix", "pie-norefresh")


# -- data ------------------------------------------------------------------
def fetch_release(package: str, version: str) -> Path:
    """Download and unpack a source release (``pip download --no-binary :all:``), cached."""
    root = cache_root() / "evaldata" / f"{package}-{version}"
    done = root / ".unpacked"
    if done.exists():
        return root
    root.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
           "--disable-pip-version-check", f"{package}=={version}", "-d", str(root)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"pip download {package}=={version} failed:\n{result.stderr.strip()}")
    archive = next(p for p in root.iterdir() if p.name.endswith((".tar.gz", ".zip", ".tar.bz2")))
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive) as z:
            z.extractall(root / "src")
    else:
        with tarfile.open(archive) as t:
            t.extractall(root / "src", filter="data")
    done.touch()
    return root


def python_files(release: Path) -> dict[str, str]:
    """Module path -> text; keys drop the sdist folder and a leading ``src/``."""
    files = {}
    for path in sorted((release / "src").rglob("*.py")):
        parts = path.relative_to(release / "src").parts[1:]
        if parts and parts[0] == "src":
            parts = parts[1:]
        if any(p in ("tests", "test", "docs", "examples") for p in parts[:-1]):
            continue
        try:
            files["/".join(parts)] = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
    return files


@dataclass(frozen=True)
class Hunk:
    old_start: int  # old line range [old_start, old_end)
    old_end: int
    new_lines: list[str]
    target: int  # index into new_lines of the held-out line


def hunks(old: str, new: str) -> list[Hunk]:
    """Line hunks whose new side has a non-blank line to predict."""
    a, b = old.split("\n"), new.split("\n")
    out = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        lines = b[j1:j2]
        nonblank = [k for k, line in enumerate(lines) if line.strip()]
        out.append(Hunk(i1, i2, lines, nonblank[-1] if nonblank else -1))
    return out


# -- scoring ---------------------------------------------------------------
def edit_similarity(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a.strip(), b.strip(), autojunk=False).ratio()


@torch.inference_mode()
def teacher_forced_argmax(model: Any, cache: Any, ids: list[int]) -> list[int]:
    device = next(model.parameters()).device
    out = model(input_ids=torch.tensor([ids], device=device), past_key_values=cache, use_cache=True, logits_to_keep=len(ids))
    return out.logits[0].argmax(-1).tolist()


def predict(loaded: LoadedModel, ids: list[int], cache: Any, context: CompletionContext) -> tuple[str, list[int]]:
    final = None
    for final in decode(loaded, ids, context, CompletionOptions(max_tokens=48, scope=Scope.LINE), cache=cache):
        pass
    assert final is not None
    return final.text, list(final.token_ids)


# -- replay ----------------------------------------------------------------
def _offset(text: str, line: int) -> int:
    """Character offset where ``line`` starts; lines past the end clamp to ``len(text)``."""
    starts = line_starts(text)
    return starts[line] if line < len(starts) else len(text)


@torch.inference_mode()
def run_edits_eval(
    model_name: str | None,
    package: str,
    old_version: str,
    new_version: str,
    *,
    max_tokens: int = 2048,
    limit: int = 40,
    stale_budget: int = 256,
    cursor_window: int = 32,
    device: str | None = None,
    progress: Callable[[dict], None] | None = None,
) -> dict:
    loaded = load_model(model_name, device, install_missing=True)
    old_files = python_files(fetch_release(package, old_version))
    new_files = python_files(fetch_release(package, new_version))
    records = replay_edits(loaded, old_files, new_files, max_tokens=max_tokens, limit=limit,
                           stale_budget=stale_budget, cursor_window=cursor_window, progress=progress)
    summary = summarize(records, loaded.name, package, old_version, new_version, stale_budget)
    summary["cursor_window"] = cursor_window
    return summary


@torch.inference_mode()
def replay_edits(
    loaded: LoadedModel,
    old_files: dict[str, str],
    new_files: dict[str, str],
    *,
    max_tokens: int = 2048,
    limit: int = 40,
    stale_budget: int = 256,
    cursor_window: int = 32,
    progress: Callable[[dict], None] | None = None,
) -> list[dict]:
    """One record per predicted line: each mode's output, ready time and top-1 agreement."""
    tok, family = loaded.tokenizer, loaded.family
    handle = ModelHandle(loaded.model, tok, kv.rope_spec(loaded.model),
                         tok.convert_tokens_to_ids(family.fim_suffix_token), tok.convert_tokens_to_ids(family.fim_middle_token))
    pie_policy = SessionPolicy(mode="pie", stale_budget=stale_budget, idle_refresh_seconds=float("inf"))
    records: list[dict] = []
    for path in sorted(set(old_files) & set(new_files)):
        old, new = old_files[path], new_files[path]
        if old == new or len(tokenize(tok, old)[0]) > max_tokens or len(tokenize(tok, new)[0]) > max_tokens:
            continue
        header = session_header_ids(tok, family, path.rsplit("/", 1)[-1])
        base = DocumentSession(handle, old, header)
        base.ensure_encoded()
        sessions = {name: base.clone() for name in MODES[1:]}
        text, shift = old, 0
        for hunk in hunks(old, new):
            if len(records) >= limit:
                break
            first_line = hunk.old_start + shift  # where the hunk's new lines begin now
            start = _offset(text, first_line)
            end = _offset(text, hunk.old_end + shift)
            replacement = list(hunk.new_lines)
            target = replacement[hunk.target] if hunk.target >= 0 else None
            if target is not None:
                replacement[hunk.target] = ""
            joined = "".join(line + "\n" for line in replacement)
            if end == len(text) and not text.endswith("\n") and joined:
                joined = joined[:-1]
            edits = [CharEdit(start, end, joined)]
            text = text[:start] + joined + text[end:]
            shift += len(hunk.new_lines) - (hunk.old_end - hunk.old_start)
            policies = {name: pie_policy for name in MODES[2:]}
            policies["prefix"] = SessionPolicy(mode="prefix")
            for name, session in sessions.items():
                session.apply_edits(edits, policies[name])
            if target is None:
                continue
            cursor = _offset(text, first_line + hunk.target)
            prefix, suffix = text[:cursor], text[cursor:]
            context = CompletionContext(prefix=prefix, suffix=suffix, scope=Scope.LINE)
            record: dict = {"file": path, "target": target}

            # recompute: the reference
            started = time.perf_counter()
            ids = build_fim_prompt(tok, family, prefix, suffix, path=path.rsplit("/", 1)[-1], budget=None).token_ids
            ref_cache = kv.new_cache(loaded.model.config)
            kv.encode_chunked(loaded.model, ref_cache, ids[:-1])
            record["recompute_ready_s"] = time.perf_counter() - started
            saved = kv.snapshot(ref_cache)
            text_out, generated = predict(loaded, ids[-1:], ref_cache, context)
            record["recompute"] = text_out
            forced = [ids[-1]] + generated
            ref_argmax = teacher_forced_argmax(loaded.model, kv.from_snapshot(loaded.model.config, saved), forced)

            for name, session in sessions.items():
                started = time.perf_counter()
                if name in ("pie", "pie-window", "pie-suffix") and session.refresh_due(pie_policy):
                    session.refresh()
                window = cursor_window if name == "pie-window" else 0
                suffix_window = SUFFIX_WINDOW if name == "pie-suffix" else None
                fork, rest = session.fim_fork(cursor, "prefix" if name == "prefix" else "pie", window, suffix_window)
                record[f"{name}_ready_s"] = time.perf_counter() - started
                saved = kv.snapshot(fork)
                record[name], _ = predict(loaded, rest, fork, context)
                argmax = teacher_forced_argmax(loaded.model, kv.from_snapshot(loaded.model.config, saved), forced)
                record[f"{name}_top1"] = sum(a == b for a, b in zip(argmax, ref_argmax)) / len(ref_argmax)
            # type the real line
            typed = [CharEdit(cursor, cursor, target)]
            text = text[:cursor] + target + text[cursor:]
            for name, session in sessions.items():
                session.apply_edits(typed, policies[name])
            records.append(record)
            if progress:
                progress({k: (round(v, 3) if isinstance(v, float) else v) for k, v in record.items()})
            for name, session in sessions.items():
                assert session.tokens.text == text, (path, name)
        if len(records) >= limit:
            break
    return records


def summarize(records: list[dict], model: str, package: str, old: str, new: str, stale_budget: int) -> dict:
    n = max(1, len(records))
    summary: dict = {"eval": "edits", "model": model, "package": f"{package} {old} -> {new}",
                     "tasks": len(records), "stale_budget": stale_budget, "modes": {}}
    for mode in MODES:
        row = {
            "exact_match": round(sum(r[mode].strip() == r["target"].strip() for r in records) / n, 4),
            "edit_similarity": round(sum(edit_similarity(r[mode], r["target"]) for r in records) / n, 4),
            "mean_ready_s": round(sum(r[f"{mode}_ready_s"] for r in records) / n, 3),
        }
        if mode != "recompute":
            row["top1_agreement_vs_recompute"] = round(sum(r[f"{mode}_top1"] for r in records) / n, 4)
            row["same_output_as_recompute"] = round(sum(r[mode] == r["recompute"] for r in records) / n, 4)
        summary["modes"][mode] = row
    return summary


def write_records(records: list[dict], path: Path) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
