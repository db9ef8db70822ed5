"""Document store: edits, versions and every bad-input case, on literal text."""

import pytest

from engine.documents import DocumentStore, apply_edits
from engine.errors import DocumentAlreadyOpen, DocumentNotFound, InvalidInput, PositionOutOfRange, StaleVersion, TooLarge
from engine.types import Position, Range, TextEdit


def edit(l1, c1, l2, c2, text):
    return TextEdit(Range(Position(l1, c1), Position(l2, c2)), text)


def test_insert_delete_replace():
    text = "ab\ncd\n"
    assert apply_edits(text, [edit(1, 1, 1, 1, "X")]) == "ab\ncXd\n"
    assert apply_edits(text, [edit(0, 1, 1, 1, "")]) == "ad\n"
    assert apply_edits(text, [edit(0, 0, 0, 2, "xyz")]) == "xyz\ncd\n"


def test_edits_apply_in_order_each_on_the_previous_result():
    # second edit's range refers to the text after the first
    assert apply_edits("abc", [edit(0, 0, 0, 0, "X"), edit(0, 4, 0, 4, "Y")]) == "XabcY"


def test_end_of_document_position_is_valid():
    assert apply_edits("a\n", [edit(1, 0, 1, 0, "b")]) == "a\nb"


def test_positions_count_code_points():
    assert apply_edits("é😀x", [edit(0, 2, 0, 3, "y")]) == "é😀y"


def test_versions_must_increase():
    store = DocumentStore()
    store.open("u", "python", 3, "x")
    with pytest.raises(StaleVersion):
        store.edit("u", 3, [edit(0, 0, 0, 0, "y")])
    assert store.edit("u", 4, [edit(0, 0, 0, 0, "y")]).text == "yx"


def test_out_of_range_edit_changes_nothing():
    store = DocumentStore()
    store.open("u", "python", 1, "ab\ncd")
    with pytest.raises(PositionOutOfRange):
        store.edit("u", 2, [edit(0, 0, 0, 0, "ok"), edit(5, 0, 5, 0, "bad")])
    with pytest.raises(PositionOutOfRange):
        store.edit("u", 2, [edit(0, 3, 0, 3, "past end of line")])
    document = store.get("u")
    assert (document.text, document.version) == ("ab\ncd", 1)


def test_reversed_range_is_invalid():
    with pytest.raises(InvalidInput):
        apply_edits("abc", [edit(0, 2, 0, 1, "")])


def test_unknown_document_and_double_open():
    store = DocumentStore()
    with pytest.raises(DocumentNotFound):
        store.get("nope")
    with pytest.raises(DocumentNotFound):
        store.close("nope")
    store.open("u", "python", 1, "")
    with pytest.raises(DocumentAlreadyOpen):
        store.open("u", "python", 1, "")


def test_oversize_document_and_oversize_edit_are_refused():
    store = DocumentStore(max_document_chars=10)
    with pytest.raises(TooLarge):
        store.open("big", "python", 1, "x" * 11)
    store.open("u", "python", 1, "x" * 10)
    with pytest.raises(TooLarge):
        store.edit("u", 2, [edit(0, 0, 0, 0, "y")])
    assert store.get("u").text == "x" * 10


def test_split_at_cursor():
    store = DocumentStore()
    document = store.open("u", "python", 1, "def f():\n    return 1\n")
    assert document.split_at(Position(1, 11)) == ("def f():\n    return ", "1\n")
