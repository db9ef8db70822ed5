"""PIE on the real Qwen2.5-Coder 0.5B: layer 0 exact, completions as recompute's."""

import pytest
import torch

from cache import kv
from engine.engine import CompletionEngine
from engine.types import CompletionOptions, CompletionRequest, Position, Range, TextEdit

pytestmark = pytest.mark.real_model

URI = "file:///proj/shapes.py"
TEXT = (
    "import math\n\n\n"
    "def rectangle_area(width, height):\n    return width * height\n\n\n"
    "def circle_area(radius):\n    return \n\n\n"
    "print(circle_area(2.0))\n"
)


def complete(engine, position, mode):
    chunk = None
    options = CompletionOptions(max_tokens=16, cache_mode=mode)
    for chunk in engine.complete(CompletionRequest(f"r-{mode}", URI, position, options=options)):
        pass
    return chunk


def test_pie_after_an_edit_completes_like_recompute(real_model):
    engine = CompletionEngine(real_model, background=False)
    engine.open_document(URI, "python", 1, TEXT)
    complete(engine, Position(8, 11), "pie")  # encodes the session
    # the programmer adds a docstring above: every later row moves by its token count
    engine.edit_document(URI, 2, [TextEdit(Range(Position(8, 0), Position(8, 0)), '    """Area of a circle."""\n')])
    pie = complete(engine, Position(9, 11), "pie")
    recompute = complete(engine, Position(9, 11), "recompute")
    prefix = complete(engine, Position(9, 11), "prefix")
    assert "math.pi" in recompute.text and "radius" in recompute.text
    assert prefix.text == recompute.text  # exact rows: the same greedy answer
    assert "math.pi" in pie.text  # approximate rows: still the right code for the spot
    assert pie.timings.encoded_tokens == 1  # the prompt came from the patched session

    session = engine.sessions.get(URI)
    session.sync(engine.policy)
    reference = kv.new_cache(real_model.model.config)
    kv.encode(real_model.model, reference, session.header_ids + session.tokens.ids)
    # layer 0 depends only on token and position: PIE reproduces it up to float32 RoPE rounding
    assert torch.allclose(session.cache.layers[0].keys, reference.layers[0].keys, atol=2e-3, rtol=1e-3)
    assert torch.equal(session.cache.layers[0].values, reference.layers[0].values) or torch.allclose(
        session.cache.layers[0].values, reference.layers[0].values, atol=1e-5
    )
