"""The one place that converts protobuf messages to and from engine/types.py dataclasses.

Why one module: the service and the client both speak protobuf on the wire and
dataclasses everywhere else; keeping every conversion here means a field added
to the .proto is wired up (or forgotten) in exactly one file. Conversions *from*
protobuf also validate what the wire format cannot: user text arrives as UTF-8
``bytes`` and is decoded here, so invalid UTF-8 becomes InvalidInput
(INVALID_ARGUMENT) with a message naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.errors import InvalidInput, PositionOutOfRange
from engine.proto.livefim.v1 import engine_pb2 as pb
from engine.types import (
    CompletionChunk,
    CompletionOptions,
    CompletionRequest,
    DocumentState,
    FinishReason,
    Position,
    Range,
    Scope,
    TextEdit,
    Timings,
)

INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class OpenDocument:
    """The arguments of CompletionEngine.open_document, as one value."""

    uri: str
    language_id: str
    version: int
    text: str


@dataclass(frozen=True)
class EditDocument:
    """The arguments of CompletionEngine.edit_document, as one value."""

    uri: str
    version: int
    edits: list[TextEdit]


def decode_utf8(data: bytes, what: str) -> str:
    """Decode wire text, naming ``what`` and the bad byte offset when it is not UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidInput(
            f"{what} is not valid UTF-8: byte {error.start} (0x{data[error.start]:02x}): {error.reason}"
        ) from None


# -- Position, Range, TextEdit ---------------------------------------------
def position_to_proto(position: Position) -> pb.Position:
    for name, value in (("line", position.line), ("character", position.character)):
        if not -INT32_MAX - 1 <= value <= INT32_MAX:
            raise PositionOutOfRange(f"{name} {value} does not fit in 32 bits")
    return pb.Position(line=position.line, character=position.character)


def position_from_proto(message: pb.Position) -> Position:
    return Position(line=message.line, character=message.character)


def range_to_proto(range_: Range) -> pb.Range:
    return pb.Range(start=position_to_proto(range_.start), end=position_to_proto(range_.end))


def range_from_proto(message: pb.Range) -> Range:
    return Range(start=position_from_proto(message.start), end=position_from_proto(message.end))


def text_edit_to_proto(edit: TextEdit) -> pb.TextEdit:
    return pb.TextEdit(range=range_to_proto(edit.range), text=edit.text.encode("utf-8"))


def text_edit_from_proto(message: pb.TextEdit, what: str = "edit text") -> TextEdit:
    return TextEdit(range=range_from_proto(message.range), text=decode_utf8(message.text, what))


# -- documents ---------------------------------------------------------------
def document_state_to_proto(state: DocumentState) -> pb.DocumentState:
    return pb.DocumentState(uri=state.uri, version=state.version, characters=state.characters, lines=state.lines)


def document_state_from_proto(message: pb.DocumentState) -> DocumentState:
    return DocumentState(uri=message.uri, version=message.version, characters=message.characters, lines=message.lines)


def open_document_to_proto(value: OpenDocument) -> pb.OpenDocumentRequest:
    return pb.OpenDocumentRequest(
        uri=value.uri, language_id=value.language_id, version=value.version, text=value.text.encode("utf-8")
    )


def open_document_from_proto(message: pb.OpenDocumentRequest) -> OpenDocument:
    return OpenDocument(
        uri=message.uri,
        language_id=message.language_id,
        version=message.version,
        text=decode_utf8(message.text, f"{message.uri}: document text"),
    )


def edit_document_to_proto(value: EditDocument) -> pb.EditDocumentRequest:
    return pb.EditDocumentRequest(
        uri=value.uri, version=value.version, edits=[text_edit_to_proto(edit) for edit in value.edits]
    )


def edit_document_from_proto(message: pb.EditDocumentRequest) -> EditDocument:
    edits = [
        text_edit_from_proto(edit, f"{message.uri}: text of edit {index}") for index, edit in enumerate(message.edits)
    ]
    return EditDocument(uri=message.uri, version=message.version, edits=edits)


# -- enums -------------------------------------------------------------------
_SCOPE_TO_PROTO = {Scope.AUTO: pb.SCOPE_AUTO, Scope.LINE: pb.SCOPE_LINE, Scope.BLOCK: pb.SCOPE_BLOCK}
_SCOPE_FROM_PROTO = {value: key for key, value in _SCOPE_TO_PROTO.items()}

_FINISH_TO_PROTO = {
    FinishReason.NONE: pb.FINISH_REASON_UNSPECIFIED,
    FinishReason.STOP_TOKEN: pb.FINISH_REASON_STOP_TOKEN,
    FinishReason.MAX_TOKENS: pb.FINISH_REASON_MAX_TOKENS,
    FinishReason.END_OF_LINE: pb.FINISH_REASON_END_OF_LINE,
    FinishReason.SCOPE_END: pb.FINISH_REASON_SCOPE_END,
    FinishReason.SUFFIX_OVERLAP: pb.FINISH_REASON_SUFFIX_OVERLAP,
    FinishReason.MAX_LINES: pb.FINISH_REASON_MAX_LINES,
    FinishReason.CANCELLED: pb.FINISH_REASON_CANCELLED,
}
_FINISH_FROM_PROTO = {value: key for key, value in _FINISH_TO_PROTO.items()}
assert len(_FINISH_TO_PROTO) == len(FinishReason), "every FinishReason needs a proto value"


def scope_to_proto(scope: Scope) -> pb.Scope.ValueType:
    return _SCOPE_TO_PROTO[scope]


def scope_from_proto(value: int) -> Scope:
    if value not in _SCOPE_FROM_PROTO:
        raise InvalidInput(f"unknown scope {value}; expected one of {sorted(_SCOPE_FROM_PROTO)}")
    return _SCOPE_FROM_PROTO[value]  # type: ignore[index]


def finish_reason_to_proto(reason: FinishReason) -> pb.FinishReason.ValueType:
    return _FINISH_TO_PROTO[reason]


def finish_reason_from_proto(value: int) -> FinishReason:
    if value not in _FINISH_FROM_PROTO:
        raise InvalidInput(f"unknown finish reason {value}")
    return _FINISH_FROM_PROTO[value]  # type: ignore[index]


# -- completion --------------------------------------------------------------
def completion_options_to_proto(options: CompletionOptions) -> pb.CompletionOptions:
    message = pb.CompletionOptions(
        max_tokens=options.max_tokens,
        temperature=options.temperature,
        top_p=options.top_p,
        scope=scope_to_proto(options.scope),
        max_lines=options.max_lines,
    )
    if options.seed is not None:
        message.seed = options.seed
    if options.model is not None:
        message.model = options.model
    if options.cache_mode is not None:
        message.cache_mode = options.cache_mode
    if options.retrieval is not None:
        message.retrieval = options.retrieval
    if options.speculation is not None:
        message.speculation = options.speculation
    if options.suggestions != 1:
        message.suggestions = options.suggestions
    return message


def completion_options_from_proto(message: pb.CompletionOptions) -> CompletionOptions:
    """Unset optional fields take CompletionOptions' defaults."""
    defaults = CompletionOptions()
    return CompletionOptions(
        max_tokens=message.max_tokens if message.HasField("max_tokens") else defaults.max_tokens,
        temperature=message.temperature if message.HasField("temperature") else defaults.temperature,
        top_p=message.top_p if message.HasField("top_p") else defaults.top_p,
        seed=message.seed if message.HasField("seed") else defaults.seed,
        scope=scope_from_proto(message.scope),
        max_lines=message.max_lines if message.HasField("max_lines") else defaults.max_lines,
        model=(message.model or None) if message.HasField("model") else defaults.model,
        cache_mode=(message.cache_mode or None) if message.HasField("cache_mode") else defaults.cache_mode,
        retrieval=message.retrieval if message.HasField("retrieval") else defaults.retrieval,
        speculation=(message.speculation or None) if message.HasField("speculation") else defaults.speculation,
        suggestions=message.suggestions if message.HasField("suggestions") else defaults.suggestions,
    )


def completion_request_to_proto(request: CompletionRequest) -> pb.CompleteRequest:
    message = pb.CompleteRequest(
        request_id=request.request_id,
        uri=request.uri,
        position=position_to_proto(request.position),
        options=completion_options_to_proto(request.options),
    )
    if request.version is not None:
        message.version = request.version
    return message


def completion_request_from_proto(message: pb.CompleteRequest) -> CompletionRequest:
    return CompletionRequest(
        request_id=message.request_id,
        uri=message.uri,
        position=position_from_proto(message.position),
        version=message.version if message.HasField("version") else None,
        options=completion_options_from_proto(message.options),
    )


def timings_to_proto(timings: Timings) -> pb.Timings:
    return pb.Timings(
        prompt_tokens=timings.prompt_tokens,
        prefill_ms=timings.prefill_ms,
        decode_ms=timings.decode_ms,
        total_ms=timings.total_ms,
        prepare_ms=timings.prepare_ms,
        encoded_tokens=timings.encoded_tokens,
        retrieval_ms=timings.retrieval_ms,
        context_chunks=timings.context_chunks,
        target_passes=timings.target_passes,
        drafted_tokens=timings.drafted_tokens,
        accepted_tokens=timings.accepted_tokens,
    )


def timings_from_proto(message: pb.Timings) -> Timings:
    return Timings(
        prompt_tokens=message.prompt_tokens,
        prefill_ms=message.prefill_ms,
        decode_ms=message.decode_ms,
        total_ms=message.total_ms,
        prepare_ms=message.prepare_ms,
        encoded_tokens=message.encoded_tokens,
        retrieval_ms=message.retrieval_ms,
        context_chunks=message.context_chunks,
        target_passes=message.target_passes,
        drafted_tokens=message.drafted_tokens,
        accepted_tokens=message.accepted_tokens,
    )


def completion_chunk_to_proto(chunk: CompletionChunk) -> pb.CompleteResponse:
    return pb.CompleteResponse(
        request_id=chunk.request_id,
        text=chunk.text,
        done=chunk.done,
        finish_reason=finish_reason_to_proto(chunk.finish_reason),
        generated_tokens=chunk.generated_tokens,
        timings=timings_to_proto(chunk.timings),
        scope=scope_to_proto(chunk.scope),
        model=chunk.model,
        cache_mode=chunk.cache_mode,
        speculation=chunk.speculation,
        alternatives=list(chunk.alternatives),
    )


def completion_chunk_from_proto(message: pb.CompleteResponse) -> CompletionChunk:
    return CompletionChunk(
        request_id=message.request_id,
        text=message.text,
        done=message.done,
        finish_reason=finish_reason_from_proto(message.finish_reason),
        generated_tokens=message.generated_tokens,
        timings=timings_from_proto(message.timings),
        scope=scope_from_proto(message.scope),
        model=message.model,
        cache_mode=message.cache_mode,
        speculation=message.speculation,
        alternatives=tuple(message.alternatives),
    )
