"""Fill-in-the-middle prompts: template from the registry, text cut to a token budget.

Why pieces are tokenized separately: user text must never be read as control
tokens (a file that contains the string ``<|fim_prefix|>`` stays plain text),
and only the template's own literals become special tokens.

Example (Qwen2.5-Coder)::

    <|file_sep|>app.py\\n<|fim_prefix|>def add(a, b):\\n    return <|fim_suffix|>\\n<|fim_middle|>

The prefix keeps its *last* lines and the suffix its *first* lines; cuts fall
on line boundaries so the model never sees half a line at the edge.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any, Sequence

from context.assemble import CONTROL, RepoFormat, Segment
from engine.registry import ModelFamily

CHARS_PER_TOKEN_CEILING = 8  # pre-cut before tokenizing: code rarely exceeds this


@dataclass(frozen=True)
class PromptBudget:
    max_prefix_tokens: int = 1536
    max_suffix_tokens: int = 512


@dataclass(frozen=True)
class FimPrompt:
    token_ids: list[int]
    prefix: str  # the prefix text actually used (after the budget cut)
    suffix: str
    truncated_prefix: bool
    truncated_suffix: bool


def _encode_text(tokenizer: Any, text: str) -> list[int]:
    if not text:
        return []
    return tokenizer(text, add_special_tokens=False, split_special_tokens=True).input_ids


def count_text_tokens(tokenizer: Any, text: str) -> int:
    """Tokens ``text`` costs as user text (budgets are counted with this)."""
    return len(_encode_text(tokenizer, text))


def _encode_template_literal(tokenizer: Any, literal: str) -> list[int]:
    if not literal:
        return []
    return tokenizer(literal, add_special_tokens=False).input_ids


def keep_tail(tokenizer: Any, text: str, max_tokens: int) -> tuple[str, bool]:
    """The longest suffix of ``text`` that starts at a line start and fits ``max_tokens``."""
    if max_tokens <= 0:
        return "", bool(text)
    start = max(0, len(text) - max_tokens * CHARS_PER_TOKEN_CEILING)
    window = text[start:]
    encoding = tokenizer(window, add_special_tokens=False, split_special_tokens=True, return_offsets_mapping=True)
    if start == 0 and len(encoding.input_ids) <= max_tokens:
        return text, False
    first_kept_char = encoding.offset_mapping[-max_tokens][0] if len(encoding.input_ids) > max_tokens else 0
    cut = start + first_kept_char
    if cut > 0 and text[cut - 1] != "\n":
        next_line = text.find("\n", cut)
        cut = len(text) if next_line == -1 else next_line + 1
    return text[cut:], True


def keep_head(tokenizer: Any, text: str, max_tokens: int) -> tuple[str, bool]:
    """The longest prefix of ``text`` that ends at a line end and fits ``max_tokens``."""
    if max_tokens <= 0:
        return "", bool(text)
    end = min(len(text), max_tokens * CHARS_PER_TOKEN_CEILING)
    window = text[:end]
    encoding = tokenizer(window, add_special_tokens=False, split_special_tokens=True, return_offsets_mapping=True)
    if end == len(text) and len(encoding.input_ids) <= max_tokens:
        return text, False
    cut = encoding.offset_mapping[max_tokens][0] if len(encoding.input_ids) > max_tokens else end
    if cut < len(text) and text[cut - 1 : cut] != "\n":
        last_newline = text.rfind("\n", 0, cut)
        cut = 0 if last_newline == -1 else last_newline + 1
    return text[:cut], True


def build_fim_prompt(
    tokenizer: Any,
    family: ModelFamily,
    prefix: str,
    suffix: str,
    *,
    path: str = "",
    budget: PromptBudget | None = PromptBudget(),
) -> FimPrompt:
    """Token ids of the FIM prompt, with the file header when ``path`` is known.

    ``budget=None`` keeps the whole prefix and suffix (the session path's reference).
    """
    if budget is None:
        kept_prefix, cut_prefix, kept_suffix, cut_suffix = prefix, False, suffix, False
    else:
        kept_prefix, cut_prefix = keep_tail(tokenizer, prefix, budget.max_prefix_tokens)
        kept_suffix, cut_suffix = keep_head(tokenizer, suffix, budget.max_suffix_tokens)
    ids: list[int] = []
    if path:
        ids += _render(tokenizer, family.file_header_template, {"path": path.replace("\n", " ")})
    ids += _render(tokenizer, family.fim_template, {"prefix": kept_prefix, "suffix": kept_suffix})
    return FimPrompt(ids, kept_prefix, kept_suffix, cut_prefix, cut_suffix)


def session_header_ids(tokenizer: Any, family: ModelFamily, path: str = "") -> list[int]:
    """The fixed rows a document session caches before the text: file header and prefix marker.

    ``header + tok(prefix) + [FS] + tok(suffix) + [FM]`` equals ``build_fim_prompt(..., budget=None)``.
    """
    ids = _render(tokenizer, family.file_header_template, {"path": path.replace("\n", " ")}) if path else []
    return ids + _encode_template_literal(tokenizer, family.fim_prefix_token)


def repo_format(family: ModelFamily) -> RepoFormat:
    """The family's repo-level markers, for ``context.assemble``."""
    repo_marker = family.repo_header_template.split("{", 1)[0]
    file_marker = family.file_header_template.split("{", 1)[0]
    return RepoFormat(repo_marker, file_marker, family.fim_prefix_token, family.fim_suffix_token, family.fim_middle_token)


def encode_segments(tokenizer: Any, segments: Sequence[Segment]) -> list[int]:
    """Token ids of assembled segments: markers as special tokens, user text never as one."""
    ids: list[int] = []
    for segment in segments:
        ids += _encode_template_literal(tokenizer, segment.text) if segment.kind == CONTROL else _encode_text(tokenizer, segment.text)
    return ids


def context_header_ids(tokenizer: Any, family: ModelFamily, segments: Sequence[Segment], path: str = "") -> list[int]:
    """Session header with repository context: repo line and context files, then the file header.

    The context segments are the stable leading part of an assembled prompt
    (``RepoPrompt.segments[:stable_segments]``); with none, this equals
    ``session_header_ids``.
    """
    return encode_segments(tokenizer, segments) + session_header_ids(tokenizer, family, path)


def _render(tokenizer: Any, template: str, values: dict[str, str]) -> list[int]:
    """Literals of the template as (special) tokens, fields as plain text."""
    ids: list[int] = []
    for literal, field, _, _ in string.Formatter().parse(template):
        ids += _encode_template_literal(tokenizer, literal)
        if field is not None:
            ids += _encode_text(tokenizer, values[field])
    return ids
