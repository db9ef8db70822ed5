"""cache/tokens.py: character edits become token patches equal to a fresh tokenization.

Every case checks the same three facts (``check``): after the edit the ids and
starts equal a fresh tokenization of the new text, and the patch's runs applied
to the old ids give the new ids. The literal cases also pin the runs, with the
tokens spelled out (Ġ is a space, Ċ a newline, č a carriage return).
"""

from __future__ import annotations

import os
import unicodedata

os.environ.setdefault("OMP_WAIT_POLICY", "ACTIVE")

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cache.tokens import (
    CharEdit,
    KeptRun,
    NewRun,
    TokenHunk,
    TokenizedText,
    TokenPatch,
    _stable_after,
    _stable_before,
    windows_are_exact,
)

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def fresh(tokenizer, text: str) -> tuple[list[int], list[int]]:
    """The reference: tokenize the whole text from scratch."""
    enc = tokenizer(text, add_special_tokens=False, split_special_tokens=True, return_offsets_mapping=True)
    return list(enc["input_ids"]), [start for start, _ in enc["offset_mapping"]]


def check(tokenizer, doc: TokenizedText, edits: list[CharEdit]) -> TokenPatch:
    old_ids = doc.ids
    patch = doc.edit(edits)
    assert (doc.ids, doc.starts) == fresh(tokenizer, doc.text), doc.text
    assert patch.apply(old_ids) == doc.ids
    assert patch.old_length == len(old_ids) and patch.new_length == len(doc.ids)
    return patch


def apply_text(text: str, edits: list[CharEdit]) -> str:
    for e in edits:
        text = text[: e.start] + e.text + text[e.end :]
    return text


class CountingTokenizer:
    """A fake that forwards to the real tokenizer and records the length of every text it sees.

    With ``backend=False`` it hides the backend, like a tokenizer this module knows nothing about.
    """

    def __init__(self, tokenizer, backend: bool = True) -> None:
        self.tokenizer = tokenizer
        self.lengths: list[int] = []
        if backend:
            self.backend_tokenizer = tokenizer.backend_tokenizer

    def __call__(self, text: str, **kwargs):
        self.lengths.append(len(text))
        return self.tokenizer(text, **kwargs)


# --- the pre-tokenizer rule the windows rely on ---------------------------------------------


def pre_token_starts(tokenizer, text: str) -> set[int]:
    return {start for _, (start, _) in tokenizer.backend_tokenizer.pre_tokenizer.pre_tokenize_str(text)} | {len(text)}


def test_a_line_start_alone_is_not_a_pre_token_boundary(tokenizer):
    # "\s*[\r\n]+" runs to the last newline of a whitespace run: the blank line's
    # spaces join the newlines around them, so offset 2 (a line start) is inside "\n  \n".
    pieces = tokenizer.backend_tokenizer.pre_tokenizer.pre_tokenize_str("a\n  \nb")
    assert [span for _, span in pieces] == [(0, 1), (1, 5), (5, 6)]
    # The rule rejects offset 2 (the run after it, "  \n", holds a newline) and accepts 5.
    assert _stable_after("a\n  \nb", 0) == 5
    assert _stable_before("a\n  \nb", 6) == 5
    assert _stable_before("a\n  \nb", 5) == 0


# Characters that stress the split regex: newline kinds, Unicode spaces (\xa0, \u2028,
# \x85 are \s but not [\r\n]; \x1c is Python-space but not Unicode White_Space), letters,
# digits, contractions, punctuation, multi-byte characters, and ones the NFC normalizer
# rewrites (a combining acute, the Angstrom sign, Hangul jamo, EN QUAD -> EN SPACE).
NASTY = ["\n", "\r", " ", "\t", "\x0b", "\x0c", "\x85", "\xa0", "\u2028", "\u3000", "\x1c",
         "a", "B", "1", "_", "(", ")", ":", "'", "'s", '"', "#", "é", "中", "😀", "\u200d",
         "\u0301", "e\u0301", "\u212b", "\u1100\u1161", "\u11a8", "\u2000"]


def test_the_real_tokenizer_gets_windows(tokenizer):
    # transformers 5 gives Qwen2Tokenizer an NFC normalizer (tokenizer.json has none): still exact.
    assert windows_are_exact(tokenizer)
    assert not windows_are_exact(CountingTokenizer(tokenizer, backend=False))


@PROPERTY
@given(st.lists(st.sampled_from(NASTY), max_size=40).map("".join))
def test_stable_points_are_pre_token_boundaries(tokenizer, text):
    boundaries = pre_token_starts(tokenizer, text)
    for i in range(len(text) + 1):
        assert _stable_after(text, i) in boundaries, (text, i)
        assert _stable_before(text, i) in boundaries, (text, i)


# --- starts: offset mapping on characters split across tokens -------------------------------


def byte_level_starts(tokenizer, ids: list[int], text: str) -> list[int]:
    """Reference starts: walk the tokens' bytes and name the character holding each first byte."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    extra = [b for b in range(256) if b not in printable]
    byte_of = {chr(b): b for b in printable} | {chr(256 + i): b for i, b in enumerate(extra)}
    added = {tok.content for tok in tokenizer.backend_tokenizer.get_added_tokens_decoder().values()}
    char_of_byte = [i for i, ch in enumerate(text) for _ in ch.encode("utf-8")]
    starts, offset = [], 0
    for piece in tokenizer.convert_ids_to_tokens(ids):
        starts.append(char_of_byte[offset])
        offset += len(piece.encode("utf-8")) if piece in added else len(piece)
    assert offset == len(char_of_byte)
    return starts


def test_starts_of_split_characters_name_the_character(tokenizer):
    # The zero-width joiner (3 bytes) becomes two tokens "âĢ" + "į": both start at 1.
    doc = TokenizedText(tokenizer, "👨\u200d👩")
    assert doc.ids == [145367, 378, 235, 145233]
    assert doc.starts == [0, 1, 1, 2]
    # "中文" is one token; "😀" one token per emoji.
    assert TokenizedText(tokenizer, "中文😀😀").starts == [0, 2, 3]


@PROPERTY
@given(st.lists(st.sampled_from(NASTY + ["<tool_call>", "\U0001f9ec", "ꙮ", "\U00020000"]), max_size=30).map("".join))
def test_offset_mapping_starts_match_byte_level_reference(tokenizer, text):
    # The reference reads the text's own bytes, so it holds where NFC changes nothing.
    text = unicodedata.normalize("NFC", text)
    doc = TokenizedText(tokenizer, text)
    assert doc.starts == byte_level_starts(tokenizer, doc.ids, text)


def test_starts_where_nfc_merges_characters(tokenizer):
    # "cafe\u0301" is tokenized as "café": "ca", "fé" (from "fe\u0301"), " =", " ", "1".
    doc = TokenizedText(tokenizer, "cafe\u0301 = 1")
    assert doc.ids == [924, 58858, 284, 220, 16]
    assert doc.starts == [0, 2, 5, 7, 8]


# --- literal edits ---------------------------------------------------------------------------


def test_insert_inside_identifier_splits_a_token(tokenizer):
    # " result" -> " resu_lt": one token becomes " res", "u", "_lt".
    doc = TokenizedText(tokenizer, "def f(result):\n    return result\n")
    patch = check(tokenizer, doc, [CharEdit(30, 30, "_")])
    assert patch.runs == [KeptRun(0, 6), NewRun([592, 84, 39164]), KeptRun(7, 8)]
    assert (patch.new_token_count, patch.first_change) == (3, 6)


def test_delete_a_space_merges_tokens(tokenizer):
    # ["x", " =", " a", " b", "\n"] -> ["x", " =", " ab", "\n"]
    doc = TokenizedText(tokenizer, "x = a b\n")
    patch = check(tokenizer, doc, [CharEdit(5, 6, "")])
    assert patch.runs == [KeptRun(0, 2), NewRun([668]), KeptRun(4, 5)]
    assert patch.hunks() == [TokenHunk(2, 4, 2, [668])]


def test_delete_whole_line_encodes_nothing(tokenizer):
    # The line "    y = 2\n" is the six tokens "   ", " y", " =", " ", "2", "\n".
    doc = TokenizedText(tokenizer, "x = 1\n    y = 2\nz = 3\n")
    patch = check(tokenizer, doc, [CharEdit(6, 16, "")])
    assert patch.runs == [KeptRun(0, 5), KeptRun(11, 16)]
    assert patch.new_token_count == 0 and patch.first_change == 5
    assert patch.hunks() == [TokenHunk(5, 11, 5, [])]
    assert patch.hunks()[0].shift == -6


def test_replace_across_lines(tokenizer):
    # "1\nb = 2" -> "10": tokens "1" "\n" "b" " =" " " "2" become "1" "0"; "1" is kept.
    doc = TokenizedText(tokenizer, "a = 1\nb = 2\nc = 3\n")
    patch = check(tokenizer, doc, [CharEdit(4, 11, "10")])
    assert doc.text == "a = 10\nc = 3\n"
    assert patch.runs == [KeptRun(0, 4), NewRun([15]), KeptRun(9, 15)]


def test_insert_newline_splits_a_line(tokenizer):
    # "(a" becomes "(\n", "   ", " a": the token after the break changes too.
    doc = TokenizedText(tokenizer, "x = foo(a, b)\n")
    patch = check(tokenizer, doc, [CharEdit(8, 8, "\n    ")])
    assert patch.runs == [KeptRun(0, 3), NewRun([1006, 262, 264]), KeptRun(4, 7)]


def test_edit_at_offset_zero(tokenizer):
    # "#" merges into "import": "#import" is one token.
    doc = TokenizedText(tokenizer, "import os\nimport sys\n")
    patch = check(tokenizer, doc, [CharEdit(0, 0, "#")])
    assert patch.runs == [NewRun([5913]), KeptRun(1, 6)]
    assert patch.first_change == 0


def test_append_at_end(tokenizer):
    doc = TokenizedText(tokenizer, "import os\nimport sys\n")
    patch = check(tokenizer, doc, [CharEdit(21, 21, "import re\n")])
    assert patch.runs == [KeptRun(0, 6), NewRun([474, 312, 198])]
    assert patch.first_change == 6


def test_end_without_newline(tokenizer):
    # No line ends after the edit: the window runs to the end of the text. " fo" -> " foo".
    doc = TokenizedText(tokenizer, "import os\nx = fo")
    patch = check(tokenizer, doc, [CharEdit(16, 16, "o")])
    assert patch.runs == [KeptRun(0, 5), NewRun([15229])]


def test_cjk_inside_a_merged_token(tokenizer):
    # "中文" is one token; inserting "字" leaves three single-character tokens.
    doc = TokenizedText(tokenizer, "s = '中文'\n")
    patch = check(tokenizer, doc, [CharEdit(6, 6, "字")])
    assert patch.runs == [KeptRun(0, 3), NewRun([15946, 18600, 16744]), KeptRun(4, 5)]


def test_emoji_next_to_emoji(tokenizer):
    doc = TokenizedText(tokenizer, "print('😀')\n")
    patch = check(tokenizer, doc, [CharEdit(8, 8, "😀")])
    assert patch.runs == [KeptRun(0, 3), NewRun([141334]), KeptRun(3, 4)]


def test_joiner_split_across_tokens(tokenizer):
    # The ZWJ's bytes become two tokens that share start 5.
    doc = TokenizedText(tokenizer, "f('👨👩')\n")
    patch = check(tokenizer, doc, [CharEdit(4, 4, "\u200d")])
    assert patch.runs == [KeptRun(0, 3), NewRun([378, 235]), KeptRun(3, 5)]
    assert doc.starts[3:5] == [4, 4]


def test_nfc_builds_a_kept_token_from_new_characters(tokenizer):
    # Typing ")e" + U+0301 over "é": NFC makes "é" again, so its token (old index 3) is kept,
    # but it now comes from two characters at 6-7: its start is 6, not the old 5 + delta 2.
    doc = TokenizedText(tokenizer, "x = 'éaa'\n")
    patch = check(tokenizer, doc, [CharEdit(5, 6, ")e\u0301")])
    assert patch.runs == [KeptRun(0, 2), NewRun([16667]), KeptRun(3, 6)]  # "Ġ'" -> "Ġ')"
    assert doc.starts == [0, 1, 3, 6, 8, 10]
    # The same character in another normal form: the ids do not change at all.
    assert check(tokenizer, doc, [CharEdit(6, 8, "\u00e9")]).is_noop


def test_crlf_text(tokenizer):
    # "\r\n" is one token; editing "2" touches only "2".
    doc = TokenizedText(tokenizer, "a = 1\r\nb = 2\r\n")
    patch = check(tokenizer, doc, [CharEdit(11, 12, "3")])
    assert patch.runs == [KeptRun(0, 8), NewRun([18]), KeptRun(9, 10)]
    # Deleting a "\r" turns "\r\n" (319) into "\n" (198).
    patch = check(tokenizer, doc, [CharEdit(5, 6, "")])
    assert patch.runs == [KeptRun(0, 4), NewRun([198]), KeptRun(5, 10)]


def test_inserting_cr_before_lf_merges(tokenizer):
    doc = TokenizedText(tokenizer, "a = 1\nb = 2\n")
    patch = check(tokenizer, doc, [CharEdit(5, 5, "\r")])
    assert patch.runs == [KeptRun(0, 4), NewRun([319]), KeptRun(5, 10)]


def test_blank_lines_with_spaces(tokenizer):
    # "\n  \n" and "  \n" are single tokens, so a window may not end at these line starts.
    doc = TokenizedText(tokenizer, "a = 1\n  \n  \nb = 2\n")
    patch = check(tokenizer, doc, [CharEdit(7, 7, "\n")])
    assert patch.runs == [KeptRun(0, 4), NewRun([26809, 48426]), KeptRun(6, 11)]


def test_empty_document(tokenizer):
    doc = TokenizedText(tokenizer, "")
    assert (doc.ids, doc.starts) == ([], [])
    patch = check(tokenizer, doc, [CharEdit(0, 0, "x = 1\n")])
    assert patch.runs == [NewRun([87, 284, 220, 16, 198])]
    assert (patch.old_length, patch.first_change) == (0, 0)
    patch = check(tokenizer, doc, [CharEdit(0, 6, "")])
    assert patch.runs == [] and patch.new_length == 0
    assert patch.hunks() == [TokenHunk(0, 5, 0, [])]
    assert check(tokenizer, doc, []).is_noop


RENAME_SOURCE = """\
def tally(items):
    count = 0
    for item in items:
        if item.ok:
            count += 1
        else:
            log(item)
    print("done")
    return count
"""


def test_rename_in_three_places_gives_three_new_runs(tokenizer):
    # Right to left, so every edit's offsets are valid in the text the previous one left.
    spots = [i for i in range(len(RENAME_SOURCE)) if RENAME_SOURCE.startswith("count", i)]
    assert len(spots) == 3
    doc = TokenizedText(tokenizer, RENAME_SOURCE)
    patch = check(tokenizer, doc, [CharEdit(i, i + 5, "total") for i in reversed(spots)])
    assert [type(run) for run in patch.runs] == [KeptRun, NewRun, KeptRun, NewRun, KeptRun, NewRun, KeptRun]
    assert patch.new_token_count == 3  # " count" -> " total", each one token
    assert len(patch.hunks()) == 3


def test_rename_left_to_right_with_shifting_offsets(tokenizer):
    # "count" -> "n": each later offset moves left by 4 per earlier rename.
    spots = [i for i in range(len(RENAME_SOURCE)) if RENAME_SOURCE.startswith("count", i)]
    edits = [CharEdit(i - 4 * k, i - 4 * k + 5, "n") for k, i in enumerate(spots)]
    doc = TokenizedText(tokenizer, RENAME_SOURCE)
    patch = check(tokenizer, doc, edits)
    assert doc.text == RENAME_SOURCE.replace("count", "n")
    assert sum(isinstance(run, NewRun) for run in patch.runs) == 3


def test_batch_that_undoes_itself_is_a_noop(tokenizer):
    doc = TokenizedText(tokenizer, "x = value\n")
    patch = check(tokenizer, doc, [CharEdit(6, 6, "zz"), CharEdit(6, 8, "")])
    assert patch.is_noop and patch.new_token_count == 0
    assert check(tokenizer, doc, [CharEdit(4, 9, "value")]).is_noop  # same text back
    assert check(tokenizer, doc, [CharEdit(3, 3, "")]).is_noop


def test_adjacent_edits_merge_into_one_run(tokenizer):
    # Two edits on the same identifier: one NewRun, trimmed against the old tokens.
    doc = TokenizedText(tokenizer, "a = 1\nvalue = compute(x)\nb = 2\n")
    patch = check(tokenizer, doc, [CharEdit(6, 11, "total"), CharEdit(14, 21, "measure")])
    assert [type(run) for run in patch.runs] == [KeptRun, NewRun, KeptRun, NewRun, KeptRun]
    patch = check(tokenizer, doc, [CharEdit(6, 7, "T"), CharEdit(7, 8, "O")])
    assert [type(run) for run in patch.runs] == [KeptRun, NewRun, KeptRun]


def test_bad_range_is_rejected(tokenizer):
    doc = TokenizedText(tokenizer, "abc")
    for bad in [CharEdit(-1, 0, ""), CharEdit(2, 1, ""), CharEdit(0, 4, "")]:
        with pytest.raises(ValueError):
            doc.edit([bad])
    assert doc.text == "abc"
    # A batch is all or nothing: the second edit is out of range once the first shrank the text.
    ids = doc.ids
    with pytest.raises(ValueError):
        doc.edit([CharEdit(0, 2, ""), CharEdit(2, 3, "x")])
    assert (doc.text, doc.ids) == ("abc", ids)


def test_one_char_edit_tokenizes_a_small_window(tokenizer):
    # 200 lines; typing one character mid-file re-tokenizes one or two lines and encodes 1-3 tokens.
    lines = [f"    value_{i} = compute(value_{i - 1}, {i}) + 1" for i in range(200)]
    text = "def f():\n" + "\n".join(lines) + "\n"
    counting = CountingTokenizer(tokenizer)
    doc = TokenizedText(counting, text)
    assert doc.windowed
    at = text.index("compute(value_99") + 3
    patch = check(tokenizer, doc, [CharEdit(at, at, "x")])
    assert counting.lengths[1:] == [len(lines[100]) + 2]  # its line, plus the "x" and the "\n"
    assert 1 <= patch.new_token_count <= 3
    assert patch.first_change > 1000


def test_one_line_file_falls_back_to_full_tokenization(tokenizer):
    text = "x = [" + ", ".join(str(i) for i in range(300)) + "]"
    counting = CountingTokenizer(tokenizer)
    doc = TokenizedText(counting, text)
    at = text.index("150")
    patch = check(tokenizer, doc, [CharEdit(at, at + 3, "abc")])
    assert counting.lengths[1:] == [len(text)]
    assert patch.new_token_count <= 3  # still trimmed to the change


def test_unknown_tokenizer_gets_full_tokenization(tokenizer):
    counting = CountingTokenizer(tokenizer, backend=False)
    doc = TokenizedText(counting, RENAME_SOURCE)
    assert not doc.windowed
    patch = check(tokenizer, doc, [CharEdit(4, 9, "count")])
    assert counting.lengths == [len(RENAME_SOURCE)] * 2
    assert patch.new_token_count == 1 and len(patch.hunks()) == 1


# --- property: random texts, random edit sequences -------------------------------------------

LINES = ["def f(x, y=2):", "    return x + y", "", "    ", "  \t", "class Point:", '    """Doc 中文."""',
         "x = [1, 2, 3]", "if a and not b:", "\t\ty = 'é中😀'", "# it's a comment", "print(\"hello\")",
         "    for i in range(10):", "        total += i", "}", "<tool_call>", "s = '<|endoftext|>'"]
ENDINGS = ["\n", "\n", "\n", "\r\n", "\r", "\n\n"]
SNIPPETS = ["\n", "\r\n", "\n    ", "  ", "\t", "x", "_", "value", "'s", "()", " = ", "中", "😀", "👨\u200d👩",
            "\u200d", "é", "\u0301", "\xa0", "<tool_call>", "<|fim_prefix|>", "123", "\n\n", "  \n", "# ", '"']

texts = st.lists(st.tuples(st.sampled_from(LINES) | st.lists(st.sampled_from(NASTY), max_size=6).map("".join),
                           st.sampled_from(ENDINGS)),
                 max_size=10).map(lambda pairs: "".join(line + end for line, end in pairs))
snippets = st.sampled_from(SNIPPETS) | st.lists(st.sampled_from(NASTY + SNIPPETS), max_size=5).map("".join)


@st.composite
def edit_batches(draw, text: str) -> list[list[CharEdit]]:
    batches = []
    for _ in range(draw(st.integers(1, 4))):
        batch = []
        for _ in range(draw(st.integers(0, 3))):
            start = draw(st.integers(0, len(text)))
            end = draw(st.integers(start, min(len(text), start + 12)))
            edit = CharEdit(start, end, draw(snippets | st.just("")))
            text = apply_text(text, [edit])
            batch.append(edit)
        batches.append(batch)
    return batches


@PROPERTY
@given(st.data())
def test_edits_match_fresh_tokenization(tokenizer, data):
    text = data.draw(texts)
    doc = TokenizedText(tokenizer, text)
    for batch in data.draw(edit_batches(text)):
        old_ids = doc.ids
        patch = check(tokenizer, doc, batch)
        text = apply_text(text, batch)
        assert doc.text == text
        # The hunks are the same change in PIE's terms: splice them into the old ids.
        rebuilt, at = [], 0
        for hunk in patch.hunks():
            rebuilt += old_ids[at : hunk.old_start]
            assert len(rebuilt) == hunk.new_start
            rebuilt += hunk.ids
            at = hunk.old_end
        assert rebuilt + old_ids[at:] == doc.ids
        assert patch.new_token_count == sum(len(h.ids) for h in patch.hunks())


def test_invert_undoes_a_patch_and_compose_with_it_is_the_identity():
    from cache.tokens import KeptRun, NewRun, TokenPatch, compose, identity, invert, trimmed

    old = [1, 2, 3, 4, 5, 6]
    patch = TokenPatch(6, [KeptRun(0, 2), NewRun([7, 8]), KeptRun(3, 4), KeptRun(5, 6)])
    new = patch.apply(old)
    back = invert(patch, old)
    assert back.apply(new) == old
    round_trip = compose(patch, back)
    assert round_trip.apply(old) == old
    assert trimmed(round_trip, old) == identity(6)
