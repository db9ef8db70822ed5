from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Scope(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SCOPE_AUTO: _ClassVar[Scope]
    SCOPE_LINE: _ClassVar[Scope]
    SCOPE_BLOCK: _ClassVar[Scope]

class FinishReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FINISH_REASON_UNSPECIFIED: _ClassVar[FinishReason]
    FINISH_REASON_STOP_TOKEN: _ClassVar[FinishReason]
    FINISH_REASON_MAX_TOKENS: _ClassVar[FinishReason]
    FINISH_REASON_END_OF_LINE: _ClassVar[FinishReason]
    FINISH_REASON_SCOPE_END: _ClassVar[FinishReason]
    FINISH_REASON_SUFFIX_OVERLAP: _ClassVar[FinishReason]
    FINISH_REASON_MAX_LINES: _ClassVar[FinishReason]
    FINISH_REASON_CANCELLED: _ClassVar[FinishReason]
SCOPE_AUTO: Scope
SCOPE_LINE: Scope
SCOPE_BLOCK: Scope
FINISH_REASON_UNSPECIFIED: FinishReason
FINISH_REASON_STOP_TOKEN: FinishReason
FINISH_REASON_MAX_TOKENS: FinishReason
FINISH_REASON_END_OF_LINE: FinishReason
FINISH_REASON_SCOPE_END: FinishReason
FINISH_REASON_SUFFIX_OVERLAP: FinishReason
FINISH_REASON_MAX_LINES: FinishReason
FINISH_REASON_CANCELLED: FinishReason

class Position(_message.Message):
    __slots__ = ("line", "character")
    LINE_FIELD_NUMBER: _ClassVar[int]
    CHARACTER_FIELD_NUMBER: _ClassVar[int]
    line: int
    character: int
    def __init__(self, line: _Optional[int] = ..., character: _Optional[int] = ...) -> None: ...

class Range(_message.Message):
    __slots__ = ("start", "end")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    start: Position
    end: Position
    def __init__(self, start: _Optional[_Union[Position, _Mapping]] = ..., end: _Optional[_Union[Position, _Mapping]] = ...) -> None: ...

class TextEdit(_message.Message):
    __slots__ = ("range", "text")
    RANGE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    range: Range
    text: bytes
    def __init__(self, range: _Optional[_Union[Range, _Mapping]] = ..., text: _Optional[bytes] = ...) -> None: ...

class DocumentState(_message.Message):
    __slots__ = ("uri", "version", "characters", "lines")
    URI_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CHARACTERS_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    uri: str
    version: int
    characters: int
    lines: int
    def __init__(self, uri: _Optional[str] = ..., version: _Optional[int] = ..., characters: _Optional[int] = ..., lines: _Optional[int] = ...) -> None: ...

class OpenDocumentRequest(_message.Message):
    __slots__ = ("uri", "language_id", "version", "text")
    URI_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    uri: str
    language_id: str
    version: int
    text: bytes
    def __init__(self, uri: _Optional[str] = ..., language_id: _Optional[str] = ..., version: _Optional[int] = ..., text: _Optional[bytes] = ...) -> None: ...

class EditDocumentRequest(_message.Message):
    __slots__ = ("uri", "version", "edits")
    URI_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EDITS_FIELD_NUMBER: _ClassVar[int]
    uri: str
    version: int
    edits: _containers.RepeatedCompositeFieldContainer[TextEdit]
    def __init__(self, uri: _Optional[str] = ..., version: _Optional[int] = ..., edits: _Optional[_Iterable[_Union[TextEdit, _Mapping]]] = ...) -> None: ...

class CloseDocumentRequest(_message.Message):
    __slots__ = ("uri",)
    URI_FIELD_NUMBER: _ClassVar[int]
    uri: str
    def __init__(self, uri: _Optional[str] = ...) -> None: ...

class CloseDocumentResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CompletionOptions(_message.Message):
    __slots__ = ("max_tokens", "temperature", "top_p", "seed", "scope", "max_lines", "model", "cache_mode", "retrieval", "speculation", "suggestions")
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    MAX_LINES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CACHE_MODE_FIELD_NUMBER: _ClassVar[int]
    RETRIEVAL_FIELD_NUMBER: _ClassVar[int]
    SPECULATION_FIELD_NUMBER: _ClassVar[int]
    SUGGESTIONS_FIELD_NUMBER: _ClassVar[int]
    max_tokens: int
    temperature: float
    top_p: float
    seed: int
    scope: Scope
    max_lines: int
    model: str
    cache_mode: str
    retrieval: bool
    speculation: str
    suggestions: int
    def __init__(self, max_tokens: _Optional[int] = ..., temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., seed: _Optional[int] = ..., scope: _Optional[_Union[Scope, str]] = ..., max_lines: _Optional[int] = ..., model: _Optional[str] = ..., cache_mode: _Optional[str] = ..., retrieval: _Optional[bool] = ..., speculation: _Optional[str] = ..., suggestions: _Optional[int] = ...) -> None: ...

class CompleteRequest(_message.Message):
    __slots__ = ("request_id", "uri", "position", "version", "options")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    uri: str
    position: Position
    version: int
    options: CompletionOptions
    def __init__(self, request_id: _Optional[str] = ..., uri: _Optional[str] = ..., position: _Optional[_Union[Position, _Mapping]] = ..., version: _Optional[int] = ..., options: _Optional[_Union[CompletionOptions, _Mapping]] = ...) -> None: ...

class Timings(_message.Message):
    __slots__ = ("prompt_tokens", "prefill_ms", "decode_ms", "total_ms", "prepare_ms", "encoded_tokens", "retrieval_ms", "context_chunks", "target_passes", "drafted_tokens", "accepted_tokens")
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    PREFILL_MS_FIELD_NUMBER: _ClassVar[int]
    DECODE_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    PREPARE_MS_FIELD_NUMBER: _ClassVar[int]
    ENCODED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    RETRIEVAL_MS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    TARGET_PASSES_FIELD_NUMBER: _ClassVar[int]
    DRAFTED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    prompt_tokens: int
    prefill_ms: float
    decode_ms: float
    total_ms: float
    prepare_ms: float
    encoded_tokens: int
    retrieval_ms: float
    context_chunks: int
    target_passes: int
    drafted_tokens: int
    accepted_tokens: int
    def __init__(self, prompt_tokens: _Optional[int] = ..., prefill_ms: _Optional[float] = ..., decode_ms: _Optional[float] = ..., total_ms: _Optional[float] = ..., prepare_ms: _Optional[float] = ..., encoded_tokens: _Optional[int] = ..., retrieval_ms: _Optional[float] = ..., context_chunks: _Optional[int] = ..., target_passes: _Optional[int] = ..., drafted_tokens: _Optional[int] = ..., accepted_tokens: _Optional[int] = ...) -> None: ...

class CompleteResponse(_message.Message):
    __slots__ = ("request_id", "text", "done", "finish_reason", "generated_tokens", "timings", "scope", "model", "cache_mode", "speculation", "alternatives")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    GENERATED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CACHE_MODE_FIELD_NUMBER: _ClassVar[int]
    SPECULATION_FIELD_NUMBER: _ClassVar[int]
    ALTERNATIVES_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    text: str
    done: bool
    finish_reason: FinishReason
    generated_tokens: int
    timings: Timings
    scope: Scope
    model: str
    cache_mode: str
    speculation: str
    alternatives: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, request_id: _Optional[str] = ..., text: _Optional[str] = ..., done: _Optional[bool] = ..., finish_reason: _Optional[_Union[FinishReason, str]] = ..., generated_tokens: _Optional[int] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ..., scope: _Optional[_Union[Scope, str]] = ..., model: _Optional[str] = ..., cache_mode: _Optional[str] = ..., speculation: _Optional[str] = ..., alternatives: _Optional[_Iterable[str]] = ...) -> None: ...

class CancelRequest(_message.Message):
    __slots__ = ("request_id",)
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    def __init__(self, request_id: _Optional[str] = ...) -> None: ...

class CancelResponse(_message.Message):
    __slots__ = ("cancelled",)
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    cancelled: bool
    def __init__(self, cancelled: _Optional[bool] = ...) -> None: ...
