"""Stop rules and post-processing: how much of the model's output to show.

Why: a FIM model happily writes past the hole — the rest of the function, or
the suffix all over again. The rules below cut the output where an editor
user expects a suggestion to end:

* ``LINE`` scope (text after the cursor on its line, or the cursor mid-line):
  stop at the end of the line.
* ``BLOCK`` scope (cursor on a blank line, or after a block opener such as
  ``:`` or ``{``): stop when a line dedents out of the cursor's block, when a
  blank line is followed by a new statement no deeper than the suggestion's
  first line, after ``max_lines`` lines, or when a line repeats the next line
  of the suffix.
* Always: never return text that duplicates the suffix (trimmed at the end).

Example::

    >>> ctx = CompletionContext(prefix="def f():\\n    ", suffix="\\n\\nprint(f())\\n", scope=Scope.BLOCK)
    >>> StopRules(ctx).check("return 1\\n\\nprint(f())\\n")
    ('return 1', <FinishReason.SUFFIX_OVERLAP: 'suffix_overlap'>)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.types import FinishReason, Scope

BLOCK_OPENERS = (":", "{", "(", "[", "=>", "->", " do", " then")
CLOSERS = ")]}"
OPENERS = "([{"


def indent_width(line: str) -> int:
    """Leading whitespace width; a tab counts as 4 columns."""
    width = 0
    for ch in line:
        if ch == " ":
            width += 1
        elif ch == "\t":
            width += 4
        else:
            break
    return width


def decide_scope(prefix: str, suffix: str, requested: Scope = Scope.AUTO) -> Scope:
    """LINE when the cursor is inside a line's text, BLOCK on a blank line or after an opener."""
    if requested is not Scope.AUTO:
        return requested
    line_before = prefix.rsplit("\n", 1)[-1]
    line_after = suffix.split("\n", 1)[0]
    if line_after.strip():
        return Scope.LINE
    if not line_before.strip():
        return Scope.BLOCK
    if line_before.rstrip().endswith(BLOCK_OPENERS):
        return Scope.BLOCK
    return Scope.LINE


@dataclass(frozen=True)
class CompletionContext:
    prefix: str
    suffix: str
    scope: Scope
    max_lines: int = 12
    line_before: str = field(init=False)
    line_after: str = field(init=False)
    next_suffix_line: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "line_before", self.prefix.rsplit("\n", 1)[-1])
        object.__setattr__(self, "line_after", self.suffix.split("\n", 1)[0])
        later = self.suffix.split("\n")[1:]
        object.__setattr__(self, "next_suffix_line", next((l.rstrip() for l in later if l.strip()), ""))

    @property
    def block_min_indent(self) -> int:
        """Lines (after the first) indented less than this leave the cursor's block."""
        if not self.line_before.strip():
            return indent_width(self.line_before)
        # After an opener the body is deeper than the opener's line.
        return indent_width(self.line_before) + 1


class StopRules:
    """Feed the whole text so far; get back what to keep and whether to stop."""

    def __init__(self, context: CompletionContext) -> None:
        self.context = context

    def check(self, text: str) -> tuple[str, FinishReason | None]:
        ctx = self.context
        if ctx.scope is Scope.LINE:
            newline = text.find("\n")
            if newline != -1:
                return text[:newline], FinishReason.END_OF_LINE
            return text, None
        lines = text.split("\n")
        complete = lines[:-1]  # the last piece has no newline yet
        first_indent: int | None = None
        for index, line in enumerate(complete):
            kept = "\n".join(lines[:index])
            after_blank = index > 1 and not complete[index - 1].strip()
            if after_blank and line.strip() and first_indent is not None and indent_width(line) <= first_indent:
                # a blank line, then a new statement at the suggestion's own level: a new chunk
                return "\n".join(lines[: index - 1]), FinishReason.SCOPE_END
            if first_indent is None and line.strip():
                first_indent = indent_width(ctx.line_before + line if index == 0 else line)
            if ctx.next_suffix_line and line.rstrip() == ctx.next_suffix_line and (index > 0 or not ctx.line_before.strip()):
                return kept, FinishReason.SUFFIX_OVERLAP
            if index > 0 and line.strip() and indent_width(line) < ctx.block_min_indent:
                return kept, FinishReason.SCOPE_END
            if index + 1 >= ctx.max_lines:
                return "\n".join(lines[: index + 1]), FinishReason.MAX_LINES
        return text, None


def _excess_closers(line: str) -> int:
    """Closing brackets without a matching opener on the line (strings ignored roughly)."""
    depth, excess, quote = 0, 0, ""
    for ch in line:
        if quote:
            if ch == quote:
                quote = ""
            continue
        if ch in "\"'`":
            quote = ch
        elif ch in OPENERS:
            depth += 1
        elif ch in CLOSERS:
            if depth:
                depth -= 1
            else:
                excess += 1
    return excess


def trim_suffix_overlap(text: str, context: CompletionContext) -> str:
    """Remove the end of ``text`` where it repeats the start of the suffix.

    * A last line that ends with the whole rest of the cursor's line loses that
      ending (``foo(a)`` before ``)`` on a line ``print(`` stays, since then the
      brackets balance only with both; see ``_excess_closers``).
    * Trailing lines equal to the suffix's next lines are dropped.
    """
    rest = context.line_after.rstrip()
    if rest.strip():
        head, _, last = text.rpartition("\n")
        joiner = "\n" if "\n" in text else ""
        for size in range(len(rest), 0, -1):
            overlap = rest[:size]
            if not last.endswith(overlap):
                continue
            trimmed = last[: len(last) - size]
            line_now = (context.line_before if not joiner else "") + last + context.line_after
            line_trimmed = (context.line_before if not joiner else "") + trimmed + context.line_after
            only_closers = all(ch in CLOSERS + ";,: " for ch in overlap)
            if only_closers:
                if _excess_closers(line_trimmed) < _excess_closers(line_now):
                    last = trimmed
                    break
            elif size == len(rest):
                last = trimmed
                break
        text = head + joiner + last if joiner else last
    suffix_lines = [l.rstrip() for l in context.suffix.split("\n")[1:]]
    lines = text.split("\n")
    while len(lines) > 1 and suffix_lines:
        # drop a trailing block of lines that the suffix already has next
        for count in range(len(lines) - 1, 0, -1):
            tail = [l.rstrip() for l in lines[-count:]]
            if any(t.strip() for t in tail) and tail == suffix_lines[:count]:
                lines = lines[:-count]
                break
        else:
            break
    return "\n".join(lines)


def finalize(text: str, context: CompletionContext) -> str:
    """The suggestion to show: scope-cut, suffix-trimmed, no trailing blanks.

    Trailing spaces are kept only mid-line, where text follows the cursor.
    """
    kept, _ = StopRules(context).check(text)
    kept = trim_suffix_overlap(kept, context)
    if "\n" in kept:
        kept = "\n".join(line.rstrip() for line in kept.split("\n")).rstrip("\n")
    elif not context.line_after.strip():
        kept = kept.rstrip()
    return kept
