r"""A document's token ids that follow character edits by re-tokenizing a small window.

PIE (DESIGN.md, "PIE, in one paragraph") needs, after every edit, which cached
tokens survive and which must be encoded. Tokens are not stable across an edit
boundary: typing "_" into " result" to make " resu_lt" turns [" result"] into
[" res", "u", "_lt"] (a split), and deleting the space in "a b" merges
["a", " b"] into ["ab"]. So characters do not map to tokens one to one; we
re-tokenize a window around the edit whose ends are *stable points*, then keep
every old token the fresh window agrees with at either end.

Stable points (checked against the real pre-tokenizer in tests/test_tokens.py).
Qwen2's split regex is
    (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}
    | ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
and BPE never merges across pre-tokens. "A line start is a pre-token
boundary" is *not* true on its own: in "a\n  \nb" the pre-token "\n  \n"
swallows the blank line's spaces (``\s*[\r\n]+`` runs to the last newline of
a whitespace run). The exact rule: offset p is a boundary when
text[p-1] == "\n" and the whitespace run starting at p holds no "\r" or "\n".
(A pre-token holding the "\n" at p-1 is all whitespace or ends at a newline;
only ``\s*[\r\n]+`` can reach past p, and only to the run's last newline.)
The rule reads only text[p-1 : first non-space at or after p], so when an edit
leaves that stretch alone, p is a boundary before and after the edit, and the
tokens on either side of the edit's window are unchanged: pre-tokens are
decided left to right and no candidate match crosses p in either text.
Offsets 0 and len(text) are always boundaries. The rest of the pipeline keeps
the rule: the NFC normalizer transformers 5 installs composes nothing with or
across "\n" and maps whitespace to whitespace, and the added tokens
("<tool_call>" is one split_special_tokens leaves whole, being non-special)
hold no newline and strip nothing. ``windows_are_exact`` checks all of this for
a given tokenizer; any other tokenizer gets a full re-tokenization per edit.

Starts. ``starts[k]`` is the code-point offset of the character that holds the
first byte of token k, as the fast tokenizer's offset mapping reports it
(verified in tests against a byte-level reference). Byte-level BPE can cut one
character into several tokens (the zero-width joiner in "👨\u200d👩" becomes
"âĢ", "į"); both start at the joiner's offset, so ``starts`` is
non-decreasing, not strictly increasing. Where NFC merges characters ("e" +
U+0301 → "é"), the start is the first original character of the merge.
"""

from __future__ import annotations

import json
from bisect import bisect_left
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence, Union

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class CharEdit:
    """Replace code points [start, end) of the current text by ``text`` (LSP-style change).

    Offsets are Python string indices (code points), not LSP's UTF-16 units:
    convert before building one. ``CharEdit(4, 4, "x")`` inserts "x" before
    index 4; ``CharEdit(0, 3, "")`` deletes the first three characters.
    """

    start: int
    end: int
    text: str


@dataclass(frozen=True)
class KeptRun:
    """Old tokens [old_start, old_end) reused unchanged; only their position may move.

    ``KeptRun(0, 5)`` keeps the first five old tokens (their cached KV rows stay).
    """

    old_start: int
    old_end: int

    def __len__(self) -> int:
        return self.old_end - self.old_start


@dataclass(frozen=True)
class NewRun:
    """Token ids that do not come from the old sequence and must be encoded.

    ``NewRun([592, 84, 39164])`` is " res", "u", "_lt" after typing "_" into
    " result" to make " resu_lt".
    """

    ids: list[int]

    def __len__(self) -> int:
        return len(self.ids)


Run = Union[KeptRun, NewRun]


@dataclass(frozen=True)
class TokenHunk:
    """One PIE step: old tokens [old_start, old_end) became ``ids`` at new index ``new_start``.

    Every later kept token moves by ``shift`` positions, the δ of the PIE
    paragraph. A pure deletion has empty ``ids``; a pure insertion has
    ``old_start == old_end``.
    """

    old_start: int
    old_end: int
    new_start: int
    ids: list[int]

    @property
    def shift(self) -> int:
        return len(self.ids) - (self.old_end - self.old_start)


@dataclass(frozen=True)
class TokenPatch:
    """The new token sequence described against the old one, as kept and new runs.

    Runs cover the new sequence in order. Kept runs are increasing and disjoint
    in old coordinates; old tokens between them were dropped. The form is
    canonical: no empty runs, no two NewRuns side by side, no two KeptRuns that
    could be one. Example: old " x = count + 1" → " x = total + 1" gives
    ``[KeptRun(0, 2), NewRun([2790]), KeptRun(3, 6)]`` (" total" replaced
    " count"), so new_token_count == 1 and first_change == 2.
    """

    old_length: int
    runs: list[Run]

    def __post_init__(self) -> None:
        last_end = 0
        previous: Run | None = None
        for run in self.runs:
            assert len(run) > 0, ("empty run", run)
            if isinstance(run, KeptRun):
                assert last_end <= run.old_start < run.old_end <= self.old_length, (run, last_end)
                assert not (isinstance(previous, KeptRun) and previous.old_end == run.old_start), (previous, run)
                last_end = run.old_end
            else:
                assert not isinstance(previous, NewRun), (previous, run)
            previous = run

    @property
    def new_length(self) -> int:
        return sum(len(run) for run in self.runs)

    @property
    def new_token_count(self) -> int:
        """How many tokens must be encoded (the cost of the patch)."""
        return sum(len(run) for run in self.runs if isinstance(run, NewRun))

    @property
    def is_noop(self) -> bool:
        """The ids did not change (the text may have: "é" retyped as "e" + U+0301 is NFC-equal)."""
        if self.old_length == 0:
            return not self.runs
        return self.runs == [KeptRun(0, self.old_length)]

    @property
    def first_change(self) -> int:
        """New index of the first token that is not the old token at the same index.

        Tokens [0, first_change) keep their ids and positions, so a KV cache
        needs no change before it. Equals new_length when nothing before the
        end changed (a no-op, or a pure truncation: check ``is_noop``).
        """
        if self.runs and isinstance(self.runs[0], KeptRun) and self.runs[0].old_start == 0:
            return len(self.runs[0])
        return 0

    def apply(self, old_ids: Sequence[int]) -> list[int]:
        """Build the new id list from the old one: the slow reference for the runs."""
        assert len(old_ids) == self.old_length, (len(old_ids), self.old_length)
        out: list[int] = []
        for run in self.runs:
            out.extend(old_ids[run.old_start : run.old_end] if isinstance(run, KeptRun) else run.ids)
        return out

    def hunks(self) -> list[TokenHunk]:
        """The changes between kept runs, in order, as PIE replacements.

        ``[KeptRun(0, 2), NewRun([7]), KeptRun(3, 6)]`` gives one hunk
        ``TokenHunk(old_start=2, old_end=3, new_start=2, ids=[7])``.
        """
        hunks: list[TokenHunk] = []
        old_pos = new_pos = 0
        pending: list[int] = []  # ids of the NewRun since the last kept run
        for run in [*self.runs, KeptRun(self.old_length, self.old_length)]:  # a sentinel closes the last gap
            if isinstance(run, NewRun):
                pending = run.ids
                new_pos += len(run)
                continue
            if pending or run.old_start > old_pos:
                hunks.append(TokenHunk(old_pos, run.old_start, new_pos - len(pending), pending))
            pending = []
            old_pos = run.old_end
            new_pos += len(run)
        return hunks


def tokenize(tokenizer: PreTrainedTokenizerBase, text: str) -> tuple[list[int], list[int]]:
    """The one way we tokenize document text: ids and code-point start offsets.

    ``split_special_tokens=True`` so "<|fim_prefix|>" typed by the user stays
    plain text. ``tokenize(tok, "a😀b") == ([64, 141334, 65], [0, 1, 2])``.
    Non-special added tokens still match: "<tool_call>" in text is id 151657.
    """
    enc = tokenizer(text, add_special_tokens=False, split_special_tokens=True, return_offsets_mapping=True)
    return list(enc["input_ids"]), [start for start, _ in enc["offset_mapping"]]


_NEWLINES = "\r\n"

# The pre-tokenizer the stable-point rule was proved for (Qwen2, Qwen2.5), as the backend serializes it.
_QWEN2_PRE_TOKENIZER = {
    "type": "Sequence",
    "pretokenizers": [
        {
            "type": "Split",
            "pattern": {
                "Regex": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
            },
            "behavior": "Isolated",
            "invert": False,
        },
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
    ],
}


def windows_are_exact(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether the stable-point rule of this module holds for ``tokenizer``.

    True for the Qwen2.5-Coder tokenizer: its split regex, an NFC (or no)
    normalizer, and added tokens without newlines or whitespace stripping.
    A tokenizer we have not reasoned about (or a fake without a backend)
    gets False, and TokenizedText re-tokenizes the whole text on each edit.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or backend.pre_tokenizer is None:
        return False
    normalizer = backend.normalizer
    if normalizer is not None and json.loads(normalizer.__getstate__()) != {"type": "NFC"}:
        return False
    if json.loads(backend.pre_tokenizer.__getstate__()) != _QWEN2_PRE_TOKENIZER:
        return False
    return all(
        not (set(token.content) & set(_NEWLINES)) and not token.lstrip and not token.rstrip
        for token in backend.get_added_tokens_decoder().values()
    )


def _stable_before(text: str, limit: int) -> int:
    """The last stable point p whose deciding stretch text[p-1 : first non-space] lies before ``limit``.

    In "x = 1\\n    y = 2" with limit 12 (inside "y = 2"): the line start 6 is
    stable (its indentation ends at "y", index 10 < 12), so 6. Returns 0 (the
    start of text, always stable) when there is none.
    """
    i = limit
    while True:
        nl = text.rfind("\n", 0, i)
        if nl < 0:
            return 0
        p = j = nl + 1
        while j < limit and text[j].isspace() and text[j] not in _NEWLINES:
            j += 1
        if j < limit and not text[j].isspace():
            return p
        i = nl


def _stable_after(text: str, start: int) -> int:
    """The first stable point p with text[p-1] == "\\n" at index >= ``start``, else len(text).

    In "a = 1\\n\\n  \\nb = 2" from 0: offset 6 is not stable (its run "\\n  \\n"
    holds newlines), nor 7 (run "  \\n"), but 10 is.
    """
    n = len(text)
    i = start
    while True:
        nl = text.find("\n", i)
        if nl < 0:
            return n
        p = j = nl + 1
        while j < n and text[j].isspace():
            if text[j] in _NEWLINES:
                break
            j += 1
        else:
            return p
        i = j


class TokenizedText:
    """Text with its token ids and start offsets, kept equal to a fresh tokenization across edits.

    >>> doc = TokenizedText(tok, "def f(result):\\n    return result\\n")
    >>> patch = doc.edit([CharEdit(30, 30, "_")])   # " result" -> " resu_lt"
    >>> patch.runs   # [KeptRun(0, 6), NewRun([592, 84, 39164]), KeptRun(7, 8)]

    ``edit`` replaces ``ids``/``starts`` with new lists, so a reference taken
    before the edit still holds the old ones (``patch.apply(old_ids)``).
    """

    text: str
    ids: list[int]
    starts: list[int]  # code-point offset of the character holding each token's first byte
    windowed: bool  # windows_are_exact(tokenizer): False means whole-text re-tokenization per edit

    def __init__(self, tokenizer: PreTrainedTokenizerBase, text: str) -> None:
        self.tokenizer = tokenizer
        self.windowed = windows_are_exact(tokenizer)  # else every edit re-tokenizes the whole text
        self.text = text
        self.ids, self.starts = tokenize(tokenizer, text)

    def __len__(self) -> int:
        return len(self.ids)

    def edit(self, edits: Sequence[CharEdit]) -> TokenPatch:
        """Apply ``edits`` in order (each against the text the previous left) and say what changed.

        Raises ValueError for a range outside the text it applies to; the
        document is then unchanged (the whole batch is refused).
        """
        before = self.text, self.ids, self.starts
        old_ids = self.ids
        runs: list[Run] = [KeptRun(0, len(old_ids))] if old_ids else []
        try:
            for char_edit in edits:
                replaced = self._apply(char_edit)
                if replaced is not None:
                    runs = _splice(runs, *replaced)
        except ValueError:
            self.text, self.ids, self.starts = before  # _apply builds new objects: the old ones are intact
            raise
        if len(edits) > 1:
            runs = _trim_against_old(runs, old_ids)
        return TokenPatch(len(old_ids), runs)

    def _apply(self, char_edit: CharEdit) -> tuple[int, int, list[int]] | None:
        """Apply one edit; return (x, y, ids): tokens [x, y) of the previous sequence became ids."""
        text, ids, starts = self.text, self.ids, self.starts
        s, e, inserted = char_edit.start, char_edit.end, char_edit.text
        if not 0 <= s <= e <= len(text):
            raise ValueError(f"edit range [{s}, {e}) outside text of length {len(text)}")
        if s == e and not inserted:
            return None
        delta = len(inserted) - (e - s)

        # 1. Window [lo, hi) of the old text, ends at stable points in untouched text that
        #    are also old token starts (always so by the rule above; widen if not).
        lo, a, hi, b = self.window(s, e)

        # 2. Re-tokenize the window of the new text.
        new_text = text[:s] + inserted + text[e:]
        window_ids, window_starts = tokenize(self.tokenizer, new_text[lo : hi + delta])

        # 3. Keep the old tokens the window agrees with at either end.
        p, q = _agreeing_ends(ids, a, b, window_ids)
        x, y = a + p, b - q
        middle = window_ids[p : len(window_ids) - q]

        # 4. Splice. Starts inside the window come from the window: a kept token's start
        #    need not be its old one plus delta, since NFC can build the same token from
        #    other characters ("é" typed over "e" + U+0301). Past the window, add delta.
        tail = [start + delta for start in starts[b:]] if delta else starts[b:]  # O(n), ~0.1 ms at 8k
        self.text = new_text
        self.ids = ids[:x] + middle + ids[y:]
        self.starts = starts[:a] + [lo + off for off in window_starts] + tail
        return x, y, middle

    def window(self, start: int, end: int) -> tuple[int, int, int, int]:
        """(lo, first token, hi, end token): a stable window around text [start, end).

        Tokens before ``lo`` and from ``hi`` on do not depend on what lies
        between, so only the window needs re-tokenizing after a change there
        (the whole text when the tokenizer is not one the rule covers).
        """
        text = self.text
        lo = _stable_before(text, start) if self.windowed else 0
        while (a := self._token_starting_at(lo)) is None:
            lo = _stable_before(text, lo)
        hi = _stable_after(text, end) if self.windowed else len(text)
        while (b := self._token_starting_at(hi)) is None:
            hi = _stable_after(text, hi)
        return lo, a, hi, b

    def _token_starting_at(self, offset: int) -> int | None:
        """Index of the token whose first byte is the first byte of character ``offset``, if any."""
        starts = self.starts
        k = bisect_left(starts, offset)
        if offset == len(self.text):
            return k
        if k < len(starts) and starts[k] == offset:
            return k
        return None


def _splice(runs: list[Run], x: int, y: int, ids: list[int]) -> list[Run]:
    """Runs of a sequence after its tokens [x, y) are replaced by ``ids`` (canonical form).

    ``_splice([KeptRun(0, 10)], 4, 6, [7]) == [KeptRun(0, 4), NewRun([7]), KeptRun(6, 10)]``.
    """
    out: list[Run] = []
    pos = 0
    placed = False
    for run in runs:
        begin, end = pos, pos + len(run)
        pos = end
        if begin < x:  # this run's part before x
            out.append(_slice(run, 0, min(end, x) - begin))
        if end > y:  # this run's part after y, preceded by the new ids
            if not placed:
                out.append(NewRun(ids))
                placed = True
            out.append(_slice(run, max(y, begin) - begin, end - begin))
    if not placed:
        out.append(NewRun(ids))
    return _canonical(out)


def _slice(run: Run, i: int, j: int) -> Run:
    """Tokens [i, j) of a run, as a run of the same kind."""
    if isinstance(run, KeptRun):
        return KeptRun(run.old_start + i, run.old_start + j)
    return NewRun(run.ids[i:j])


def _canonical(runs: list[Run]) -> list[Run]:
    """Drop empty runs, join NewRuns side by side and KeptRuns that continue each other."""
    out: list[Run] = []
    for run in runs:
        if not len(run):
            continue
        last = out[-1] if out else None
        if isinstance(run, NewRun) and isinstance(last, NewRun):
            out[-1] = NewRun(last.ids + run.ids)
        elif isinstance(run, KeptRun) and isinstance(last, KeptRun) and last.old_end == run.old_start:
            out[-1] = KeptRun(last.old_start, run.old_end)
        else:
            out.append(run)
    return out


def _agreeing_ends(old_ids: Sequence[int], lo: int, hi: int, new: Sequence[int]) -> tuple[int, int]:
    """How many leading and trailing ids ``new`` shares with ``old_ids[lo:hi]`` (no overlap).

    ``_agreeing_ends([1, 2, 3, 4], 0, 4, [1, 9, 4]) == (1, 1)``.
    """
    p = 0
    limit = min(hi - lo, len(new))
    while p < limit and old_ids[lo + p] == new[p]:
        p += 1
    q = 0
    limit -= p
    while q < limit and old_ids[hi - 1 - q] == new[-1 - q]:
        q += 1
    return p, q


def _trim_against_old(runs: list[Run], old_ids: list[int]) -> list[Run]:
    """Shrink each NewRun by the old tokens it repeats at either end of its gap.

    After a batch, a NewRun was trimmed only against the text one edit earlier:
    inserting "x" then deleting it again leaves a NewRun equal to the old
    tokens. Here it becomes kept again (the patch is a no-op).
    """
    out: list[Run] = []
    for i, run in enumerate(runs):
        if isinstance(run, KeptRun):
            out.append(run)
            continue
        lo = runs[i - 1].old_end if i > 0 else 0  # type: ignore[union-attr]  # neighbours are KeptRuns
        hi = runs[i + 1].old_start if i + 1 < len(runs) else len(old_ids)  # type: ignore[union-attr]
        new = run.ids
        p, q = _agreeing_ends(old_ids, lo, hi, new)
        out += [KeptRun(lo, lo + p), NewRun(new[p : len(new) - q]), KeptRun(hi - q, hi)]
    return _canonical(out)


def compose(first: TokenPatch, second: TokenPatch) -> TokenPatch:
    """One patch doing ``first`` then ``second`` (old -> mid -> new), in old coordinates.

    Why: a completion after an edit can then encode the edit's tokens and the
    cursor's FIM split in a single forward pass. Kept runs of ``second`` that
    land on tokens ``first`` kept stay kept; the rest become new tokens.

    ``compose(P([K(0,2), N([7]), K(3,6)]), P([K(0,4), N([9]), K(4,6)]))``
    is ``[K(0,2), N([7]), K(3,4), N([9]), K(4,6)]``.
    """
    assert second.old_length == first.new_length, (second.old_length, first.new_length)
    segments: list[tuple[int, Run]] = []  # (mid start, run of first)
    mid = 0
    for run in first.runs:
        segments.append((mid, run))
        mid += len(run)
    mid_starts = [start for start, _ in segments]
    out: list[Run] = []
    for run in second.runs:
        if isinstance(run, NewRun):
            out.append(run)
            continue
        index = max(0, bisect_left(mid_starts, run.old_start + 1) - 1)
        position = run.old_start
        while position < run.old_end:
            seg_start, seg = segments[index]
            take_from = position - seg_start
            take_to = min(len(seg), run.old_end - seg_start)
            out.append(_slice(seg, take_from, take_to))
            position = seg_start + take_to
            index += 1
    old_ids_needed = first.old_length
    runs = _canonical(out)
    return TokenPatch(old_ids_needed, runs)


def invert(patch: TokenPatch, old_ids: Sequence[int]) -> TokenPatch:
    """The patch undoing ``patch``: from its new ids back to ``old_ids``.

    Kept runs stay kept (at their new positions); old tokens it dropped come
    back as new ones. ``invert(P([K(0,2), N([7]), K(3,4)]), [1,2,3,4])`` is
    ``[K(0,2), N([3]), K(3,4)]``.
    """
    assert len(old_ids) == patch.old_length, (len(old_ids), patch.old_length)
    runs: list[Run] = []
    new_pos = old_pos = 0
    for run in patch.runs:
        if isinstance(run, KeptRun):
            if run.old_start > old_pos:
                runs.append(NewRun(list(old_ids[old_pos : run.old_start])))
            runs.append(KeptRun(new_pos, new_pos + len(run)))
            old_pos = run.old_end
        new_pos += len(run)
    if old_pos < len(old_ids):
        runs.append(NewRun(list(old_ids[old_pos:])))
    return TokenPatch(new_pos, _canonical(runs))


def identity(length: int) -> TokenPatch:
    """The patch that changes nothing in ``length`` tokens."""
    return TokenPatch(length, [KeptRun(0, length)] if length else [])


def trimmed(patch: TokenPatch, old_ids: list[int]) -> TokenPatch:
    """``patch`` with new tokens that repeat the old ones at their gap's ends kept instead."""
    return TokenPatch(patch.old_length, _trim_against_old(list(patch.runs), old_ids))


def truncate_fresh(patch: TokenPatch, old_ids: Sequence[int], keep: int, fresh: int) -> TokenPatch:
    """The first ``keep`` new tokens as ``patch`` makes them, then the next ``fresh``
    new tokens re-encoded (one NewRun), and nothing after.

    Why: after ``<|fim_suffix|>`` is spliced in, the suffix rows a cache keeps
    never saw the marker; re-encoding a bounded suffix window instead keeps the
    prompt faithful where it matters, at a bounded cost.
    """
    final = patch.apply(old_ids)
    runs: list[Run] = []
    position = 0
    for run in patch.runs:
        if position >= keep:
            break
        take = min(len(run), keep - position)
        runs.append(_slice(run, 0, take))
        position += take
    tail = final[keep : keep + fresh]
    if tail:
        runs.append(NewRun(list(tail)))
    return TokenPatch(patch.old_length, _canonical(runs))
