"""``livefim eval edits``: replay real edits between two releases, predict the next line.

Why: PIE is approximate, so its quality must be measured against full
recompute on edits programmers really made. We download two consecutive
source releases of a PyPI package, diff every Python file, and replay the
hunks top to bottom. For each hunk we apply it except for its last non-blank
line, put the cursor on that (empty) line, and ask each cache mode to predict
it; then we type the real line and go on. The prompt is always the whole
document (header + prefix + <|fim_suffix|> + suffix + <|fim_middle|>).

Modes (``ModeSpec``): ``recompute`` (fresh encode), ``prefix`` (a session
re-encoding from the first change) and ``pie`` (a session patched by PIE,
refreshed when its changed tokens pass the staleness budget), with variants
written ``pie+w32`` (also re-encode 32 suffix rows after ``<|fim_suffix|>`` per
request: the engine's default), ``pie+s128`` (only the next 128 suffix tokens,
encoded afresh after the marker), ``pie+b64`` (staleness budget 64) and
``pie+norefresh`` (never refreshed: shows what the budget buys) and
``pie+anchor`` (``<|fim_suffix|>`` kept in the session at the cursor, following
the typing: ``SessionPolicy.fim_anchor``).

Reported per mode: exact match, edit similarity, top-1 agreement with
recompute under teacher forcing (the recompute output fed through each mode's
cache, argmax compared position by position), ready time, and the paired
difference to recompute with a 95% interval (the same tasks, so most of the
noise cancels). ``edit_suite.toml`` lists the default releases.
"""

from __future__ import annotations

import difflib
import json
import subprocess
import sys
import tarfile
import time
import tomllib
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

DEFAULT_MODES = ("recompute", "prefix", "pie", "pie+w32")
SUITE_FILE = Path(__file__).with_name("edit_suite.toml")


@dataclass(frozen=True)
class ModeSpec:
    """One way to serve the completion, parsed from ``pie+w32+b64`` style names.

    >>> ModeSpec.parse("pie+w32")
    ModeSpec(name='pie+w32', cache='pie', cursor_window=32, suffix_window=None, stale_budget=None, refresh=True, anchor=False)
    """

    name: str
    cache: str  # recompute, prefix or pie
    cursor_window: int = 0
    suffix_window: int | None = None
    stale_budget: int | None = None  # None: the run's budget
    refresh: bool = True
    anchor: bool = False  # keep <|fim_suffix|> in the session at the cursor (SessionPolicy.fim_anchor)

    @classmethod
    def parse(cls, name: str) -> "ModeSpec":
        base, *options = name.split("+")
        if base not in ("recompute", "prefix", "pie") or (options and base != "pie"):
            raise ValueError(f"unknown mode {name!r}: use recompute, prefix, pie or pie+wN/+sN/+bN/+anchor/+norefresh")
        fields: dict = {}
        for option in options:
            if option == "norefresh":
                fields["refresh"] = False
            elif option == "anchor":
                fields["anchor"] = True
            elif option[:1] in ("w", "s", "b") and option[1:].isdigit():
                key = {"w": "cursor_window", "s": "suffix_window", "b": "stale_budget"}[option[0]]
                fields[key] = int(option[1:])
            else:
                raise ValueError(f"unknown option {option!r} in mode {name!r}")
        return cls(name, base, **fields)


@dataclass(frozen=True)
class Release:
    package: str
    old: str
    new: str


def load_suite(path: Path = SUITE_FILE) -> list[Release]:
    """The releases ``livefim eval edits`` replays by default."""
    with path.open("rb") as f:
        data = tomllib.load(f)
    return [Release(r["package"], r["old"], r["new"]) for r in data["release"]]


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
    releases: list[Release],
    *,
    modes: tuple[str, ...] = DEFAULT_MODES,
    max_tokens: int = 2048,
    limit: int = 20,
    stale_budget: int = 256,
    device: str | None = None,
    progress: Callable[[dict], None] | None = None,
    records_out: list[dict] | None = None,
) -> dict:
    """Replay each release pair (at most ``limit`` tasks each) and summarize all tasks together."""
    loaded = load_model(model_name, device, install_missing=True)
    specs = [ModeSpec.parse(m) for m in modes]
    records: list[dict] = [] if records_out is None else records_out
    for release in releases:
        old_files = python_files(fetch_release(release.package, release.old))
        new_files = python_files(fetch_release(release.package, release.new))
        found = replay_edits(loaded, old_files, new_files, modes=specs, max_tokens=max_tokens, limit=limit,
                             stale_budget=stale_budget, progress=progress)
        for record in found:
            record["release"] = f"{release.package} {release.old} -> {release.new}"
        records.extend(found)
    summary = summarize(records, loaded.name, [s.name for s in specs], stale_budget)
    summary["releases"] = {f"{r.package} {r.old} -> {r.new}": sum(x["release"].startswith(r.package + " ") for x in records)
                           for r in releases}
    summary["max_doc_tokens"] = max_tokens
    return summary


@torch.inference_mode()
def replay_edits(
    loaded: LoadedModel,
    old_files: dict[str, str],
    new_files: dict[str, str],
    *,
    modes: list[ModeSpec] | None = None,
    max_tokens: int = 2048,
    limit: int = 40,
    stale_budget: int = 256,
    progress: Callable[[dict], None] | None = None,
) -> list[dict]:
    """One record per predicted line: each mode's output, ready time and top-1 agreement."""
    specs = modes if modes is not None else [ModeSpec.parse(m) for m in DEFAULT_MODES]
    if not specs or specs[0].cache != "recompute":
        specs = [ModeSpec.parse("recompute")] + [s for s in specs if s.cache != "recompute"]
    session_specs = specs[1:]
    tok, family = loaded.tokenizer, loaded.family
    handle = ModelHandle.of(loaded)
    policies = {
        spec.name: SessionPolicy(
            mode="prefix" if spec.cache == "prefix" else "pie",
            stale_budget=spec.stale_budget if spec.stale_budget is not None else stale_budget,
            idle_refresh_seconds=float("inf"),
        )
        for spec in session_specs
    }
    records: list[dict] = []
    for path in sorted(set(old_files) & set(new_files)):
        old, new = old_files[path], new_files[path]
        if old == new or len(tokenize(tok, old)[0]) > max_tokens or len(tokenize(tok, new)[0]) > max_tokens:
            continue
        header = session_header_ids(tok, family, path.rsplit("/", 1)[-1])
        base = DocumentSession(handle, old, header)
        base.ensure_encoded()
        sessions = {spec.name: base.clone() for spec in session_specs}
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

            for spec in session_specs:
                session = sessions[spec.name]
                started = time.perf_counter()
                if spec.cache == "pie" and spec.refresh and session.refresh_due(policies[spec.name]):
                    session.refresh()
                    record[f"{spec.name}_refreshed"] = True
                fork, rest = session.fim_fork(cursor, spec.cache, spec.cursor_window, spec.suffix_window, anchor=spec.anchor)
                record[f"{spec.name}_ready_s"] = time.perf_counter() - started
                saved = kv.snapshot(fork)
                record[spec.name], _ = predict(loaded, rest, fork, context)
                argmax = teacher_forced_argmax(loaded.model, kv.from_snapshot(loaded.model.config, saved), forced)
                record[f"{spec.name}_top1"] = sum(a == b for a, b in zip(argmax, ref_argmax)) / len(ref_argmax)
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


def exact(output: str, target: str) -> bool:
    return output.strip() == target.strip()


def paired_difference(values: list[float], reference: list[float]) -> dict:
    """Mean of ``values - reference`` over the same tasks, with a normal 95% interval.

    >>> paired_difference([1, 0, 1, 1], [1, 1, 1, 1])["mean"]
    -0.25
    """
    n = len(values)
    diffs = [a - b for a, b in zip(values, reference)]
    mean = sum(diffs) / n if n else 0.0
    var = sum((d - mean) ** 2 for d in diffs) / (n - 1) if n > 1 else 0.0
    half = 1.96 * (var / n) ** 0.5 if n else 0.0
    return {"mean": round(mean, 4), "ci95": [round(mean - half, 4), round(mean + half, 4)]}


def summarize(records: list[dict], model: str, modes: list[str], stale_budget: int) -> dict:
    n = max(1, len(records))
    summary: dict = {"eval": "edits", "model": model, "tasks": len(records), "stale_budget": stale_budget, "modes": {}}
    reference_em = [float(exact(r["recompute"], r["target"])) for r in records]
    reference_es = [edit_similarity(r["recompute"], r["target"]) for r in records]
    for mode in modes:
        em = [float(exact(r[mode], r["target"])) for r in records]
        es = [edit_similarity(r[mode], r["target"]) for r in records]
        row = {
            "exact_match": round(sum(em) / n, 4),
            "edit_similarity": round(sum(es) / n, 4),
            "mean_ready_s": round(sum(r[f"{mode}_ready_s"] for r in records) / n, 3),
        }
        if mode != "recompute":
            row["exact_match_minus_recompute"] = paired_difference(em, reference_em)
            row["edit_similarity_minus_recompute"] = paired_difference(es, reference_es)
            row["top1_agreement_vs_recompute"] = round(sum(r[f"{mode}_top1"] for r in records) / n, 4)
            row["same_output_as_recompute"] = round(sum(r[mode] == r["recompute"] for r in records) / n, 4)
            row["refreshes"] = sum(bool(r.get(f"{mode}_refreshed")) for r in records)
        summary["modes"][mode] = row
    return summary


def write_records(records: list[dict], path: Path) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
