"""Position-encoding conversion: client columns (UTF-16 / UTF-8 / UTF-32) <-> engine code points.

The line used throughout is ``"é中😀x"``; each character, with its size:

    char   code points   UTF-16 units   UTF-8 bytes
    é      1             1              2   (U+00E9)
    中     1             1              3   (U+4E2D)
    😀     1             2              4   (U+1F600: a surrogate pair in UTF-16)
    x      1             1              1

so the column *before* each character (and at the end) is:

    code point   0  1  2  3  4(end)
    UTF-16       0  1  2  4  5
    UTF-8        0  2  5  9  10
"""

from __future__ import annotations

import pytest
from lsprotocol import types as lsp

from engine.types import Position as EnginePosition
from engine.types import Range as EngineRange
from engine.types import TextEdit
from lsp.documents import MirroredDocument
from lsp.positions import (
    client_position_at,
    column_from_code_points,
    column_to_code_points,
    engine_position_at,
    offset_at,
    split_lines,
    to_client_position,
    to_engine_position,
    to_engine_range,
)

LINE = "é中😀x"
CODE_POINT_COLUMNS = [0, 1, 2, 3, 4]
UTF16_COLUMNS = [0, 1, 2, 4, 5]
UTF8_COLUMNS = [0, 2, 5, 9, 10]


def pos(line: int, character: int) -> lsp.Position:
    return lsp.Position(line=line, character=character)


@pytest.mark.parametrize(
    "encoding, columns",
    [("utf-16", UTF16_COLUMNS), ("utf-8", UTF8_COLUMNS), ("utf-32", CODE_POINT_COLUMNS)],
)
def test_column_boundaries_both_ways(encoding: str, columns: list[int]) -> None:
    for code_point, client in zip(CODE_POINT_COLUMNS, columns):
        assert column_from_code_points(LINE, code_point, encoding) == client, (encoding, code_point)
        assert column_to_code_points(LINE, client, encoding) == code_point, (encoding, client)


def test_utf16_column_inside_the_surrogate_pair_rounds_down_to_the_emoji() -> None:
    # UTF-16 column 3 is between the two halves of 😀 (units 2 and 3): the emoji starts at code point 2.
    assert column_to_code_points(LINE, 3, "utf-16") == 2


def test_utf8_columns_inside_multibyte_characters_round_down() -> None:
    # é is bytes 0-1, 中 bytes 2-4, 😀 bytes 5-8: any byte inside a character means that character's start.
    assert column_to_code_points(LINE, 1, "utf-8") == 0
    assert [column_to_code_points(LINE, c, "utf-8") for c in (3, 4)] == [1, 1]
    assert [column_to_code_points(LINE, c, "utf-8") for c in (6, 7, 8)] == [2, 2, 2]


def test_columns_past_the_end_clamp_to_the_line_length() -> None:
    # LSP: "If the character value is greater than the line length it defaults back to the line length."
    assert column_to_code_points(LINE, 6, "utf-16") == 4  # the line is 5 UTF-16 units, 4 code points
    assert column_to_code_points(LINE, 99, "utf-8") == 4
    assert column_to_code_points(LINE, 99, "utf-32") == 4
    assert column_to_code_points("abc", 10, "utf-16") == 3  # ASCII fast path clamps too
    assert column_from_code_points(LINE, 10, "utf-16") == 5
    assert column_from_code_points(LINE, 10, "utf-8") == 10


def test_ascii_and_single_non_ascii_lines() -> None:
    # "café = 1": é is 1 UTF-16 unit but 2 UTF-8 bytes, so only UTF-8 columns after it shift by one.
    assert column_to_code_points("café = 1", 5, "utf-16") == 5
    assert column_to_code_points("café = 1", 6, "utf-8") == 5
    # "x = '中'": the closing quote is code point 6, UTF-16 6, UTF-8 8 (中 is 3 bytes).
    assert column_from_code_points("x = '中'", 6, "utf-16") == 6
    assert column_from_code_points("x = '中'", 6, "utf-8") == 8
    # "s = '😀'": the closing quote is code point 6, UTF-16 7 (surrogate pair), UTF-8 9.
    assert column_from_code_points("s = '😀'", 6, "utf-16") == 7
    assert column_from_code_points("s = '😀'", 6, "utf-8") == 9


def test_every_code_point_column_round_trips() -> None:
    line = "a😀é中 😀😀 b"
    for encoding in ("utf-8", "utf-16", "utf-32"):
        for column in range(len(line) + 1):
            assert column_to_code_points(line, column_from_code_points(line, column, encoding), encoding) == column


def test_unknown_encoding_is_refused() -> None:
    with pytest.raises(ValueError, match="utf-7"):
        column_to_code_points("abc", 1, "utf-7")
    with pytest.raises(ValueError, match="utf-7"):
        column_from_code_points("é", 1, "utf-7")


def test_lines_split_like_lsp() -> None:
    # LSP line breaks are \n, \r\n and \r; a trailing break starts one more (empty) line.
    assert split_lines("a\r\nb\rc\nd") == ["a", "b", "c", "d"]
    assert split_lines("a\n") == ["a", ""]
    assert split_lines("") == [""]


def test_position_and_range_converters_take_the_documents_lines() -> None:
    lines = split_lines("def f():\n    return '😀' + \n")
    # Line 1 is "    return '😀' + " (the emoji at code point 12): its end is code point 17,
    # UTF-16 column 18 (the emoji counts 2) and UTF-8 column 20 (the emoji counts 4).
    assert to_engine_position(lines, pos(1, 18), "utf-16") == EnginePosition(1, 17)
    assert to_client_position(lines, EnginePosition(1, 17), "utf-16") == pos(1, 18)
    assert to_client_position(lines, EnginePosition(1, 17), "utf-8") == pos(1, 20)
    # A line past the end of the document means the end of the document (the empty last line).
    assert to_engine_position(lines, pos(7, 3), "utf-16") == EnginePosition(2, 0)
    assert to_engine_range(lines, lsp.Range(start=pos(1, 12), end=pos(1, 14)), "utf-16") == EngineRange(
        EnginePosition(1, 12), EnginePosition(1, 13)
    )  # the range covering exactly the emoji


def test_offsets_exclude_line_breaks_and_handle_a_bare_carriage_return() -> None:
    text = "ab\r\ncd\ref"
    # A column past the end of line 0 stops before its "\r\n" (offset 2), not after it.
    assert offset_at(text, pos(0, 9), "utf-16") == 2
    assert offset_at(text, pos(1, 1), "utf-16") == 5  # "c" is at 4
    assert offset_at(text, pos(2, 0), "utf-16") == 7  # after the bare "\r"
    assert client_position_at(text, 7, "utf-16") == pos(2, 0)
    # The engine counts lines by "\n" only: "cd\ref" is one engine line, so "e" is engine (1, 3).
    assert engine_position_at(text, 7) == EnginePosition(1, 3)


def test_changes_in_one_batch_are_converted_against_the_text_they_follow() -> None:
    document = MirroredDocument("file:///a.py", "python", 1, "😀\n")
    first = lsp.TextDocumentContentChangePartial(range=lsp.Range(start=pos(0, 2), end=pos(0, 2)), text="a")
    # After the first change the line is "😀a": its end is UTF-16 column 3 (code point 2).
    second = lsp.TextDocumentContentChangePartial(range=lsp.Range(start=pos(0, 3), end=pos(0, 3)), text="b")
    edits = [document.apply_change(change, "utf-16") for change in (first, second)]
    assert edits == [
        TextEdit(EngineRange(EnginePosition(0, 1), EnginePosition(0, 1)), "a"),
        TextEdit(EngineRange(EnginePosition(0, 2), EnginePosition(0, 2)), "b"),
    ]
    assert document.text == "😀ab\n"


def test_a_deletion_across_lines_and_a_full_replacement() -> None:
    document = MirroredDocument("file:///a.py", "python", 1, "x = '😀'\ny = 2\n")
    # Delete from after the emoji (UTF-8 byte 9) to the start of "2" on line 1.
    delete = lsp.TextDocumentContentChangePartial(range=lsp.Range(start=pos(0, 9), end=pos(1, 4)), text="")
    assert document.apply_change(delete, "utf-8") == TextEdit(
        EngineRange(EnginePosition(0, 6), EnginePosition(1, 4)), ""
    )
    assert document.text == "x = '😀2\n"
    full = lsp.TextDocumentContentChangeWholeDocument(text="new\n")
    assert document.apply_change(full, "utf-16") == TextEdit(
        EngineRange(EnginePosition(0, 0), EnginePosition(1, 0)), "new\n"
    )
    assert document.text == "new\n"
