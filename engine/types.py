"""Typed values that cross the engine's boundary (gRPC adapter, CLI, LSP).

Positions are zero-based ``line`` and ``character``, where ``character`` counts
Unicode code points (Python ``str`` indices). The LSP layer converts from the
client's UTF-16/UTF-8 columns before calling the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


@dataclass(frozen=True, order=True)
class Position:
    line: int
    character: int


@dataclass(frozen=True)
class Range:
    start: Position
    end: Position


@dataclass(frozen=True)
class TextEdit:
    """Replace ``range`` (end exclusive) by ``text``; an empty range inserts."""

    range: Range
    text: str


class Scope(str, Enum):
    """How much a completion may write: decided from context unless forced."""

    AUTO = "auto"
    LINE = "line"
    BLOCK = "block"


@dataclass(frozen=True)
class CompletionOptions:
    max_tokens: int = 64
    temperature: float = 0.0  # 0 means greedy
    top_p: float = 1.0
    seed: int | None = None
    scope: Scope = Scope.AUTO
    max_lines: int = 12
    model: str | None = None  # None: the engine's model
    cache_mode: str | None = None  # "recompute" | "prefix" | "pie"; None: the engine's default
    retrieval: bool | None = None  # repository context; None: on when the engine has a repository
    speculation: str | None = None  # "off" | "lookup" | "draft" | "combined"; None: the engine's default
    suggestions: int = 1  # k > 1: k distinct suggestions by superposed decoding (greedy, one final chunk)


@dataclass(frozen=True)
class CompletionRequest:
    request_id: str
    uri: str
    position: Position
    version: int | None = None  # when set, must equal the document's version
    options: CompletionOptions = field(default_factory=CompletionOptions)


@dataclass(frozen=True)
class Timings:
    prompt_tokens: int = 0
    prefill_ms: float = 0.0
    decode_ms: float = 0.0
    total_ms: float = 0.0
    prepare_ms: float = 0.0  # document cache sync + fork before decoding
    encoded_tokens: int = 0  # prompt tokens actually run through the model
    retrieval_ms: float = 0.0  # choosing repository context (0: none asked)
    context_chunks: int = 0  # repository chunks in front of the document
    target_passes: int = 0  # decode passes of the model after the prompt (plain decoding: one per token)
    drafted_tokens: int = 0  # speculation: tokens proposed
    accepted_tokens: int = 0  # speculation: proposed tokens the model agreed with


class FinishReason(str, Enum):
    NONE = ""  # still streaming
    STOP_TOKEN = "stop_token"
    MAX_TOKENS = "max_tokens"
    END_OF_LINE = "end_of_line"
    SCOPE_END = "scope_end"
    SUFFIX_OVERLAP = "suffix_overlap"
    MAX_LINES = "max_lines"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class CompletionChunk:
    """One streamed update; ``text`` is the whole suggestion so far (not a delta)."""

    request_id: str
    text: str
    done: bool
    finish_reason: FinishReason = FinishReason.NONE
    generated_tokens: int = 0
    timings: Timings = field(default_factory=Timings)
    scope: Scope = Scope.AUTO
    model: str = ""
    cache_mode: str = ""
    speculation: str = ""  # the proposer used: "off", "lookup", "draft" or "combined"
    alternatives: tuple[str, ...] = ()  # with suggestions > 1: the other suggestions, best first (``text`` is the best)


@dataclass(frozen=True)
class DocumentState:
    uri: str
    version: int
    characters: int
    lines: int
