"""The worked examples in the docstrings run and stay true: kernels, repository context and its evals,
telemetry and the language server."""

import doctest
import importlib

import pytest

MODULES = [
    "kernels.cpu_int8", "kernels.attention",
    "context.languages", "context.walk", "context.symbols", "context.chunks", "context.bm25",
    "context.index", "context.resolve", "context.retrieve", "context.outline", "context.assemble", "context.store",
    "evals.repo_tasks", "evals.bench_context", "evals.lookup_replay", "engine.speculate", "engine.pass_costs",
    "telemetry.events", "telemetry.store", "telemetry.experiments", "telemetry.report",
    "lsp.settings", "lsp.debounce", "lsp.typed_ahead", "lsp.documents",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name))
    assert result.failed == 0 and result.attempted > 0, result
