"""Repository context in the engine (tiny model, a literal repository): prompt, sessions, updates."""

from pathlib import Path

import pytest
import torch

from cache import kv
from cache.session import DocumentSession, ModelHandle
from cache.tokens import tokenize
from context.assemble import ContextBudget
from context.index import build_index
from engine.engine import CompletionEngine
from engine.prompt import session_header_ids
from engine.repo_context import RepoContext
from engine.types import CompletionOptions, CompletionRequest, Position, Range, Scope, TextEdit

SHAPES = "import math\n\n\ndef circle_area(radius):\n    return math.pi * radius ** 2\n\n\ndef square_area(side):\n    return side * side\n"
APP = "from shapes import circle_area\n\n\ndef report(r):\n    area = circle_area(r)\n    return area\n"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "geo"
    root.mkdir()
    (root / "shapes.py").write_text(SHAPES)
    (root / "app.py").write_text(APP)
    return root


@pytest.fixture
def engine(tiny_model, repo):
    engine = CompletionEngine(tiny_model, background=False, repo_context=RepoContext(build_index(repo)))
    engine.open_document((repo / "app.py").as_uri(), "python", 1, APP)
    yield engine
    engine.close()


def run(engine, uri, position, **options):
    chunk = None
    request = CompletionRequest("r", uri, position, options=CompletionOptions(max_tokens=4, scope=Scope.LINE, **options))
    for chunk in engine.complete(request):
        pass
    return chunk


def header_text(engine, uri):
    session = engine.sessions.get(uri)
    return engine.model.tokenizer.decode(session.header_ids)


def test_the_definition_of_an_imported_name_goes_in_front_of_the_document(engine, repo):
    uri = (repo / "app.py").as_uri()
    done = run(engine, uri, Position(5, 4), cache_mode="pie")
    assert done.timings.context_chunks >= 1 and done.timings.retrieval_ms > 0
    text = header_text(engine, uri)
    assert text.startswith("<|repo_name|>geo\n<|file_sep|>shapes.py\n")
    assert "def circle_area(radius):" in text and text.endswith("<|file_sep|>app.py\n<|fim_prefix|>")


def test_retrieval_off_per_request_and_recompute_reports_its_context(engine, repo):
    uri = (repo / "app.py").as_uri()
    with_context = run(engine, uri, Position(5, 4), cache_mode="recompute")
    without = run(engine, uri, Position(5, 4), cache_mode="recompute", retrieval=False)
    assert with_context.timings.context_chunks >= 1 and without.timings.context_chunks == 0
    assert with_context.timings.prompt_tokens > without.timings.prompt_tokens + 10


def test_the_same_cursor_twice_keeps_the_header_and_encodes_only_the_marker(engine, repo):
    uri = (repo / "app.py").as_uri()
    run(engine, uri, Position(5, 4), cache_mode="prefix")
    header = list(engine.sessions.get(uri).header_ids)
    again = run(engine, uri, Position(5, 4), cache_mode="prefix")
    assert engine.sessions.get(uri).header_ids == header and again.timings.encoded_tokens == 1


def test_a_chunk_cut_to_its_head_still_counts_as_in_the_context(tiny_model, tmp_path):
    root = tmp_path / "geo"
    root.mkdir()
    body = "".join(f"    side{i} = side * {i}\n" for i in range(30))
    (root / "shapes.py").write_text(f"def long_area(side):\n    \"\"\"Area, slowly.\"\"\"\n{body}    return side\n")
    app = "from shapes import long_area\n\n\ndef report(r):\n    area = long_area(r)\n    return area\n"
    (root / "app.py").write_text(app)
    context = RepoContext(build_index(root), ContextBudget(max_context_tokens=120, max_chunk_tokens=40))  # whole: ~300
    engine = CompletionEngine(tiny_model, background=False, repo_context=context)
    uri = (root / "app.py").as_uri()
    engine.open_document(uri, "python", 1, app)
    try:
        run(engine, uri, Position(5, 4), cache_mode="prefix")
        text = header_text(engine, uri)
        assert "def long_area(side):" in text and "side29" not in text and "# ...\n<|file_sep|>app.py" in text
        header = list(engine.sessions.get(uri).header_ids)
        again = run(engine, uri, Position(5, 4), cache_mode="prefix")  # the head is the chunk: nothing to replace
        assert engine.sessions.get(uri).header_ids == header and again.timings.encoded_tokens == 1
        choice = engine._choose_context(uri, app[: app.index("    area")], "", None)
        assert ("shapes.py", 0, 33) in choice.best  # the whole chunk's key: a cursor that needs another chunk replaces it
    finally:
        engine.close()


def test_an_edited_module_is_reindexed_before_the_next_retrieval(engine, repo):
    shapes_uri, app_uri = (repo / "shapes.py").as_uri(), (repo / "app.py").as_uri()
    engine.open_document(shapes_uri, "python", 1, SHAPES)
    end = SHAPES.count("\n")
    engine.edit_document(shapes_uri, 2, [TextEdit(Range(Position(end, 0), Position(end, 0)), "\n\ndef hexagon_area(side):\n    return 2.598 * side * side\n")])
    engine.edit_document(app_uri, 2, [TextEdit(Range(Position(0, 30), Position(0, 30)), ", hexagon_area")])
    edited = engine.documents.get(app_uri).text
    line = edited.count("\n")
    engine.edit_document(app_uri, 3, [TextEdit(Range(Position(line, 0), Position(line, 0)), "\n\ndef tile(s):\n    return hexagon_area(s)\n")])
    run(engine, app_uri, Position(line + 3, 4), cache_mode="recompute")
    choice = engine._choose_context(app_uri, engine.documents.get(app_uri).text, "", None)
    assert "def hexagon_area(side):" in "".join(segment.text for segment in choice.segments)  # the buffer, not the disk


def test_a_document_outside_the_repository_gets_no_context(engine, tmp_path):
    uri = (tmp_path / "elsewhere.py").as_uri()
    engine.open_document(uri, "python", 1, APP)
    done = run(engine, uri, Position(5, 4), cache_mode="pie")
    assert done.timings.context_chunks == 0 and header_text(engine, uri).startswith("<|file_sep|>elsewhere.py")


@pytest.fixture
def handle(tiny_model):
    return ModelHandle.of(tiny_model)


def fresh(handle, ids):
    cache = kv.new_cache(handle.model.config)
    kv.encode(handle.model, cache, ids)
    return cache


@pytest.mark.parametrize("mode", ["pie", "prefix"])
def test_replacing_the_header_matches_a_fresh_encode(handle, tiny_model, mode):
    tok = tiny_model.tokenizer
    old = session_header_ids(tok, tiny_model.family, "app.py")
    new = tokenize(tok, "<|file_sep|>shapes.py\n" + SHAPES)[0] + old  # context put in front
    session = DocumentSession(handle, APP, old)
    session.ensure_encoded()
    session.replace_header(new, mode)
    session.ensure_encoded()
    doc = tokenize(tok, APP)[0]
    reference = fresh(handle, new + doc)
    assert session.header_ids == new and kv.length(session.cache) == len(new) + len(doc)
    # layer 0 never depends on other rows: exact after PIE too; deeper layers are exact in prefix mode
    layers = [0] if mode == "pie" else range(len(reference.layers))
    for layer in layers:
        assert torch.allclose(session.cache.layers[layer].keys, reference.layers[layer].keys, atol=1e-4)
        assert torch.allclose(session.cache.layers[layer].values, reference.layers[layer].values, atol=1e-4)
    if mode == "pie":
        assert session.stale_from == 0  # the document rows never saw the new context
        session.refresh()
        for layer in range(len(reference.layers)):
            assert torch.allclose(session.cache.layers[layer].keys, reference.layers[layer].keys, atol=1e-4)


@pytest.mark.real_model
def test_real_model_uses_a_value_only_another_file_holds(real_model, tmp_path):
    root = tmp_path / "svc"
    root.mkdir()
    (root / "limits.py").write_text("\"\"\"Service limits.\"\"\"\n\nRETRY_BUDGET_SECONDS = 347\nMAX_WORKERS = 8\n")
    app = "from limits import RETRY_BUDGET_SECONDS\n\n\ndef test_budget():\n    assert RETRY_BUDGET_SECONDS == \n"
    engine = CompletionEngine(real_model, background=False, repo_context=RepoContext(build_index(root)))
    uri = (root / "app.py").as_uri()
    engine.open_document(uri, "python", 1, app)
    position = Position(4, len("    assert RETRY_BUDGET_SECONDS == "))
    with_context = run(engine, uri, position, cache_mode="pie")
    without = run(engine, uri, position, cache_mode="recompute", retrieval=False)
    engine.close()
    assert with_context.text.strip() == "347" and with_context.timings.context_chunks == 1
    assert without.text.strip() != "347"  # the number is nowhere in app.py
