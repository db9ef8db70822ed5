"""The worked examples in the context/ and context-eval docstrings run and stay true."""

import doctest
import importlib

import pytest

MODULES = [
    "context.languages", "context.walk", "context.symbols", "context.chunks", "context.bm25",
    "context.index", "context.resolve", "context.retrieve", "context.assemble", "context.store",
    "evals.repo_tasks", "evals.bench_context",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name))
    assert result.failed == 0 and result.attempted > 0, result
