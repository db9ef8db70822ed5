"""Retrieval: definitions first, fusion with BM25, de-duplication, per-file cap, exclusions, skip signal."""

from pathlib import Path

from context.index import build_index
from context.retrieve import RepoRetriever, RetrievalOptions, Retriever, retrieve


def write(root: Path, files: dict[str, str]) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)


SHAPES = '''\
class Circle:
    def __init__(self, radius):
        self.radius = radius


class Square:
    def __init__(self, side):
        self.side = side
'''

# Five small functions that all talk about "radius": a lexical magnet for the per-file cap.
RADIUS = "".join(f"def radius_rule_{i}(radius):\n    '''Rule {i}.'''\n    return radius * {i}\n\n\n" for i in range(5))


def repo(tmp_path: Path):
    write(tmp_path, {
        "geo/shapes.py": SHAPES,
        "geo/radius.py": RADIUS,
        "geo/units.py": "def meters(x):\n    return x\n\n\ndef feet(x):\n    return x * 3.28\n",
        "geo/app.py": "from .shapes import Circle\nfrom .units import meters\n\n\ndef main():\n    c = Circle(2)\n    return c\n",
    })
    return build_index(tmp_path)


def cursor_after(index, path: str, marker: str) -> tuple[str, str]:
    text = (index.root / path).read_text()
    at = text.index(marker) + len(marker)
    return text[:at], text[at:]


def test_definitions_of_names_near_the_cursor_come_first_and_are_deduplicated(tmp_path):
    index = repo(tmp_path)
    prefix, suffix = cursor_after(index, "geo/app.py", "c = Circle(2)\n")
    result = retrieve(index, "geo/app.py", prefix + "    radius = c.radius\n", suffix)
    first = result.chunks[0]
    # Circle is named two lines up and imported from shapes.py: its class chunk ranks first. It
    # also matches lexically ("circle", "radius") but appears once, with both reasons.
    assert (first.path, first.start_line, first.end_line) == ("geo/shapes.py", 0, 3)
    assert first.reason.startswith("definition:Circle") and "bm25" in first.reason
    ids = [c.chunk_id for c in result.chunks]
    assert len(ids) == len(set(ids))
    assert result.external_names >= 1 and not result.skip


def test_an_imported_but_unused_name_is_offered_before_lexical_matches(tmp_path):
    index = repo(tmp_path)
    prefix, suffix = cursor_after(index, "geo/app.py", "c = Circle(2)\n")
    result = retrieve(index, "geo/app.py", prefix + "    r = c.radius\n", suffix)
    reasons = {c.path: c.reason for c in result.chunks}
    # meters is imported and used nowhere yet: the next line is likely to use it. radius.py only
    # shares the word "radius" with the text around the cursor.
    assert "imported:meters" in reasons["geo/units.py"]
    ranked = [c.path for c in result.chunks]
    assert ranked.index("geo/units.py") < ranked.index("geo/radius.py")


def test_at_most_per_file_chunks_from_one_file(tmp_path):
    index = repo(tmp_path)
    prefix = "def rule():\n    return radius_rule(radius * radius)  # radius radius\n"
    for cap in (1, 2, 3):
        result = retrieve(index, "geo/new.py", prefix, "", RetrievalOptions(per_file=cap))
        from_radius = [c for c in result.chunks if c.path == "geo/radius.py"]
        assert len(from_radius) == cap  # five chunks match, the cap keeps the best ones


def test_current_file_chunks_in_view_are_excluded_but_far_definitions_are_not(tmp_path):
    filler = "".join(f"x{i} = {i}\n" for i in range(300))
    write(tmp_path, {"big.py": "def far_helper(radius):\n    return radius\n\n\n" + filler + "\ny = far_helper(1)\n"})
    index = build_index(tmp_path)
    text = (tmp_path / "big.py").read_text()
    prefix, suffix = text, ""
    result = retrieve(index, "big.py", prefix, suffix)
    # far_helper is defined 300 lines up, outside the default visible window (120 lines): offered.
    assert [(c.path, c.start_line, c.reason) for c in result.chunks[:1]] == [("big.py", 0, "local:far_helper+bm25")]
    cursor = prefix.count("\n")
    visible = retrieve(index, "big.py", prefix, suffix, visible_lines=(0, cursor + 1))
    assert visible.chunks == ()  # the whole file is in the prompt already: nothing from it


def test_skip_signal_when_nothing_near_the_cursor_comes_from_elsewhere(tmp_path):
    index = repo(tmp_path)
    result = retrieve(index, "scratch.py", "def local_only(a, b):\n    total = a + b\n", "")
    assert (result.external_names, result.skip) == (0, True)
    assert result.bm25_top < RetrievalOptions().skip_min_bm25
    assert retrieve(index, "geo/app.py", *cursor_after(index, "geo/app.py", "c = Circle(2)\n")).skip is False


def test_repo_retriever_is_a_retriever(tmp_path):
    retriever: Retriever = RepoRetriever(repo(tmp_path), RetrievalOptions(max_chunks=2))
    result = retriever.retrieve("geo/app.py", "from .shapes import Circle\nCircle(", "")
    assert len(result.chunks) <= 2 and result.chunks[0].path == "geo/shapes.py"
    assert result.elapsed_ms > 0
