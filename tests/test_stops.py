"""Stop rules and suffix trimming on literal inputs."""

from engine.stops import CompletionContext, StopRules, decide_scope, finalize, trim_suffix_overlap
from engine.types import FinishReason, Scope


def ctx(prefix: str, suffix: str, scope: Scope | None = None, max_lines: int = 12) -> CompletionContext:
    return CompletionContext(prefix=prefix, suffix=suffix, scope=scope or decide_scope(prefix, suffix), max_lines=max_lines)


def test_scope_is_line_when_text_follows_the_cursor():
    assert decide_scope("x = foo(", ")\n") is Scope.LINE


def test_scope_is_line_mid_statement_at_end_of_line():
    assert decide_scope("    total = ", "\n") is Scope.LINE


def test_scope_is_block_on_blank_line():
    assert decide_scope("def f():\n    ", "\n") is Scope.BLOCK


def test_scope_is_block_after_opener():
    assert decide_scope("def f():", "\n") is Scope.BLOCK
    assert decide_scope("function f() {", "\n}") is Scope.BLOCK


def test_requested_scope_wins():
    assert decide_scope("def f():\n    ", "\n", Scope.LINE) is Scope.LINE


def test_line_scope_stops_at_newline():
    assert StopRules(ctx("x = ", "\n")).check("1\ny = 2") == ("1", FinishReason.END_OF_LINE)
    assert StopRules(ctx("x = ", "\n")).check("1") == ("1", None)


def test_block_stops_when_a_line_dedents_out_of_the_block():
    # cursor inside a function body at indent 4; "print" at indent 0 leaves it
    rules = StopRules(ctx("def f():\n    ", "\n"))
    assert rules.check("a = 1\n    return a\nprint(f())\n") == ("a = 1\n    return a", FinishReason.SCOPE_END)


def test_block_after_opener_stops_at_same_indent_as_opener():
    # the body must be deeper than "def g():" (indent 0); "x = 2" at 0 is outside
    rules = StopRules(ctx("def g():", "\n"))
    assert rules.check("\n    return 1\nx = 2\n") == ("\n    return 1", FinishReason.SCOPE_END)


def test_block_stops_at_a_blank_line_before_a_new_statement():
    rules = StopRules(ctx("", "\n", Scope.BLOCK))
    text = "    else:\n        return False\n\ndef is_odd(n):\n"
    assert rules.check(text) == ("    else:\n        return False", FinishReason.SCOPE_END)


def test_block_stops_before_a_line_equal_to_the_suffix_next_line():
    rules = StopRules(ctx("def f():\n    x = 1\n    ", "\n    return x\n"))
    assert rules.check("y = 2\n    return x\n") == ("y = 2", FinishReason.SUFFIX_OVERLAP)


def test_block_max_lines():
    rules = StopRules(ctx("def f():\n    ", "\n", max_lines=2))
    assert rules.check("a = 1\n    b = 2\n    c = 3\n") == ("a = 1\n    b = 2", FinishReason.MAX_LINES)


def test_trim_whole_rest_of_line_repeated():
    # the model wrote the text after the cursor again: "x + 1" then suffix " + 1"
    c = ctx("y = ", " * 2\n", Scope.LINE)
    assert trim_suffix_overlap("x * 2", c) == "x"


def test_trim_closing_bracket_only_when_it_is_one_too_many():
    # prefix "print(" + "len(x))" + ")" would close one bracket too many
    assert trim_suffix_overlap("len(x))", ctx("print(", ")\n")) == "len(x)"
    # but "len(x)" + ")" balances: nothing to trim
    assert trim_suffix_overlap("len(x)", ctx("print(", ")\n")) == "len(x)"


def test_trim_partial_closer_overlap():
    # suffix "):" ; completion "n)" duplicates the ")" that the suffix brings
    assert trim_suffix_overlap("n)", ctx("def f(", "):\n")) == "n"


def test_trailing_lines_equal_to_suffix_are_dropped():
    c = ctx("def f():\n    ", "\n    return x\n", Scope.BLOCK)
    assert trim_suffix_overlap("x = 1\n    return x", c) == "x = 1"


def test_finalize_never_returns_suffix_text():
    c = ctx("def add(a, b):\n    return ", "\n\nprint(add(1, 2))\n")
    assert finalize("a + b\n\nprint(add(1, 2))", c) == "a + b"


def test_finalize_strips_trailing_whitespace_at_end_of_line():
    assert finalize("a + b   ", ctx("return ", "\n")) == "a + b"
