"""Module outlines: signature lines of a module's likely names, retrieved and fitted into their own budget."""

from pathlib import Path

from context.assemble import ContextBudget, assemble_repo_prompt
from context.index import build_index
from context.outline import signature_lines
from context.retrieve import RetrievalOptions, RetrievedChunk, retrieve

words = lambda text: len(text.split())  # noqa: E731 - a tokenizer stand-in

SHAPES = '''\
import math

ORIGIN = (0, 0)


class Circle:
    """A circle."""

    def __init__(self, radius):
        self.radius = radius


class Square:
    def __init__(self, side):
        self.side = side


def area_of(shape,
            scale=1.0):
    """Area of any shape."""
    if isinstance(shape, Circle):
        return math.pi * shape.radius ** 2 * scale
    return shape.side ** 2 * scale
'''

APP = '''\
from . import shapes


def unit_circle():
    return shapes.Circle(1)


def report(shape):
    print(shape)

'''


def test_a_signature_runs_until_its_brackets_close():
    text = "def area_of(shape,\n            scale=1.0):\n    return shape\n"
    assert signature_lines(text, 10, 10) == (10, 12, "def area_of(shape,\n            scale=1.0):")
    # Brackets inside strings and comments do not count; a one-line signature is one line.
    assert signature_lines("X = '(' # (\nY = 2\n", 0, 0) == (0, 1, "X = '(' # (")
    # A bracket that never closes stops at max_lines; a line outside the chunk has none.
    assert signature_lines("T = [\n 1,\n 2,\n 3,\n]\n", 0, 0, max_lines=3)[:2] == (0, 3)
    assert signature_lines("def f():\n    pass\n", 5, 3) is None


def _package(tmp_path: Path):
    (tmp_path / "geo").mkdir()
    (tmp_path / "geo" / "__init__.py").write_text("")
    (tmp_path / "geo" / "shapes.py").write_text(SHAPES)
    (tmp_path / "geo" / "app.py").write_text(APP)
    return build_index(tmp_path)


def test_the_outline_lists_the_nearest_modules_names_and_the_prompt_skips_those_it_holds_in_full(tmp_path):
    index = _package(tmp_path)
    prefix = APP.rsplit("\n\n", 1)[0] + "\n    "  # cursor inside report(), after a shapes.Circle use
    result = retrieve(index, "geo/app.py", prefix, "\n", RetrievalOptions(max_chunks=1))
    names = [c.reason.removeprefix("outline:") for c in result.outline]
    assert set(names) <= {"ORIGIN", "Circle", "Square", "area_of"} and {"Square", "area_of"} <= set(names)
    assert all(piece.path == "geo/shapes.py" for piece in result.outline)
    prompt = assemble_repo_prompt(result.chunks, "geo/app.py", prefix, "\n", words, ContextBudget(400, 100, 100, 100),
                                  outline=result.outline)
    assert prompt.included and prompt.outlined
    for piece in prompt.outlined:  # a chunk in full says more than its signature
        assert not any(c.path == piece.path and c.start_line < piece.end_line and piece.start_line < c.end_line
                       for c in prompt.included)
    shown = {c.reason for c in prompt.outlined} | {f"outline:{s.name}" for c in prompt.included for s in index.chunks[c.chunk_id].symbols}
    assert {"outline:Square", "outline:area_of"} <= shown
    area = next(p for p in result.outline if p.reason == "outline:area_of")
    assert area.text == "def area_of(shape,\n            scale=1.0):" and area.end_line - area.start_line == 2
    assert [p.score for p in result.outline] == sorted((p.score for p in result.outline), reverse=True)
    assert retrieve(index, "geo/app.py", prefix, "\n", RetrievalOptions(max_chunks=1, outline_names=0)).outline == ()


def _piece(line: int, text: str, score: float) -> RetrievedChunk:
    return RetrievedChunk("geo/shapes.py", line, line + 1, text, score, "outline:x")


def test_outline_pieces_take_their_own_budget_in_likelihood_order_and_never_overlap_a_chunk():
    chunk = RetrievedChunk("geo/shapes.py", 5, 10, "class Circle:\n    r = 1", 1.0, "definition:Circle")
    pieces = [_piece(5, "class Circle:", -0.5),  # inside the chunk: left out
              _piece(12, "class Square:", -1.0),
              _piece(17, "def area_of(shape, scale):", -2.0),
              _piece(2, "ORIGIN = (0, 0)", -3.0)]
    prompt = assemble_repo_prompt([chunk], "geo/app.py", "x = ", "\n", words, ContextBudget(20, 10, 10, 0), outline=pieces)
    assert prompt.outlined == () and prompt.included == (chunk,)
    without = prompt.context_tokens
    prompt = assemble_repo_prompt([chunk], "geo/app.py", "x = ", "\n", words, ContextBudget(20, 10, 10, 9), outline=pieces)
    # With its "# ..." line (2 words) Square costs 4, area_of 5, ORIGIN 6: the first two fill the 9.
    assert [p.start_line for p in prompt.outlined] == [12, 17]
    assert prompt.context_tokens == without + 9
    assert prompt.included == (chunk,)  # outline pieces are reported apart from chunks
    body = prompt.render().split("<|file_sep|>")[1]
    assert body == "geo/shapes.py\n# ...\nclass Circle:\n    r = 1\n# ...\nclass Square:\n# ...\ndef area_of(shape, scale):\n"
