"""The worked examples in the docstrings of the kernels, telemetry and language-server modules run and stay true."""

import doctest
import importlib

import pytest

MODULES = [
    "kernels.cpu_int8", "kernels.attention",
    "telemetry.events", "telemetry.store", "telemetry.experiments", "telemetry.report",
    "lsp.settings", "lsp.debounce", "lsp.typed_ahead", "lsp.documents",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name))
    assert result.failed == 0 and result.attempted > 0, result
