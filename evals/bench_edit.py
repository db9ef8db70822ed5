"""``livefim bench edit``: time to be ready for the next completion after an edit.

For real standard-library files cut to about 1k/2k/4k/8k tokens, and for four
edits in the middle of the file (insert a line, delete a line, replace a
line, and a multi-place edit of three lines), measure side by side:

* ``recompute`` — encode the whole FIM prompt from scratch;
* ``prefix``    — keep rows before the first change, re-encode the rest;
* ``pie``       — patch: encode the new tokens, re-rotate moved rows;
* ``pie_window32`` / ``pie_window128`` — pie, also re-encoding 32 / 128 suffix rows after the cursor.

"Ready" means the KV cache holds ``header + prefix + <|fim_suffix|> + suffix``
for a cursor at the end of the (last) edited line; the ``<|fim_middle|>``
forward that yields the first token is the same for all three and excluded.
Each mode starts from the same exactly-encoded session of the old text.
"""

from __future__ import annotations

import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from cache import kv
from cache.session import DocumentSession, ModelHandle
from cache.tokens import CharEdit, tokenize
from engine.documents import line_starts
from engine.prompt import build_fim_prompt, session_header_ids
from engine.runtime import load_model
from evals.machine import machine_facts

SOURCE_FILES = ("argparse.py", "inspect.py", "typing.py", "pathlib.py")
EDIT_KINDS = ("insert", "delete", "replace", "multi")


@dataclass(frozen=True)
class EditCase:
    kind: str
    edits: list[CharEdit]
    cursor_line: int  # cursor at the end of this line of the new text


def source_text(tokenizer, tokens: int) -> tuple[str, str]:
    """(file name, text) with about ``tokens`` tokens, cut at a line end of a real stdlib module."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for name in SOURCE_FILES:
        text = (stdlib / name).read_text(encoding="utf-8")
        ids, starts = tokenize(tokenizer, text)
        if len(ids) > tokens:
            cut = text.rfind("\n", 0, starts[tokens]) + 1
            return name, text[:cut]
    raise ValueError(f"no stdlib file in {SOURCE_FILES} has {tokens} tokens")


def _code_line(lines: list[str], near: int) -> int:
    """The first non-blank line at or after ``near`` (edits land on real code)."""
    index = near
    while index < len(lines) - 1 and not lines[index].strip():
        index += 1
    return index


def edit_cases(text: str) -> list[EditCase]:
    lines = text.split("\n")
    offsets = line_starts(text)
    mid = _code_line(lines, len(lines) // 2)
    indent = lines[mid][: len(lines[mid]) - len(lines[mid].lstrip())]
    start, end = offsets[mid], offsets[mid] + len(lines[mid])
    cases = [
        EditCase("insert", [CharEdit(start, start, f"{indent}checked = validate(value, strict=True)\n")], mid),
        EditCase("delete", [CharEdit(start, offsets[mid + 1], "")], max(0, mid - 1)),
        EditCase("replace", [CharEdit(start, end, f"{indent}result = transform(result, limit=10)")], mid),
    ]
    multi = []
    # edited last line first, so each edit's offsets refer to the text the previous left
    targets = sorted({_code_line(lines, int(len(lines) * f)) for f in (0.25, 0.5, 0.75)}, reverse=True)
    for line in targets:
        ind = lines[line][: len(lines[line]) - len(lines[line].lstrip())]
        multi.append(CharEdit(offsets[line], offsets[line] + len(lines[line]), f"{ind}total = combine(total, item)"))
    cases.append(EditCase("multi", multi, targets[0]))
    return cases


def _cursor(text: str, line: int) -> int:
    offsets = line_starts(text)
    return offsets[line] + len(text.split("\n")[line])


def _apply(text: str, edits: list[CharEdit]) -> str:
    for e in edits:
        text = text[: e.start] + e.text + text[e.end :]
    return text


def _timed(fn) -> tuple[float, object]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


@torch.inference_mode()
def bench_edit(model_name: str | None, sizes: list[int], kinds: list[str], device: str | None = None, progress=None) -> dict:
    loaded = load_model(model_name, device, install_missing=True)
    handle = ModelHandle.of(loaded)
    results = []
    for size in sizes:
        name, text = source_text(loaded.tokenizer, size)
        header = session_header_ids(loaded.tokenizer, loaded.family, name)
        base = DocumentSession(handle, text, header)
        encode_s, _ = _timed(base.ensure_encoded)
        for case in edit_cases(text):
            if case.kind not in kinds:
                continue
            new_text = _apply(text, case.edits)
            cursor = _cursor(new_text, case.cursor_line)
            row = {"file": name, "tokens": len(base.tokens), "edit": case.kind}

            def recompute() -> int:
                ids = build_fim_prompt(loaded.tokenizer, loaded.family, new_text[:cursor], new_text[cursor:], path=name, budget=None).token_ids
                cache = kv.new_cache(loaded.model.config)
                kv.encode_chunked(loaded.model, cache, ids[:-1])  # all but <|fim_middle|>
                return len(ids) - 1

            row["recompute_s"], row["recompute_encoded"] = _timed(recompute)
            for column, mode, window in (("prefix", "prefix", 0), ("pie", "pie", 0), ("pie_window32", "pie", 32), ("pie_window128", "pie", 128)):
                session = base.clone()

                def ready(session=session, mode=mode, window=window) -> int:
                    # the edit is still pending when the request arrives: worst case for the session
                    session.record_edits(case.edits)
                    fork, _ = session.fim_fork(cursor, mode, window)
                    return kv.length(fork) - len(header)

                row[f"{column}_s"], _ = _timed(ready)
                assert session.tokens.text == new_text
            for key in ("recompute_s", "prefix_s", "pie_s", "pie_window32_s", "pie_window128_s"):
                row[key] = round(row[key], 3)
            row["recompute_over_pie"] = round(row["recompute_s"] / max(row["pie_s"], 1e-9), 1)
            results.append(row)
            if progress:
                progress(row)
        results.append({"file": name, "tokens": len(base.tokens), "edit": "(initial encode)", "seconds": round(encode_s, 2)})
    return {
        "bench": "edit",
        "model": loaded.name,
        "device": str(loaded.device),
        "threads": torch.get_num_threads(),
        **machine_facts(),
        "results": results,
    }
