"""`livefim bench model --llamacpp` times llama.cpp in a child process, so a native crash there is reported and
the numbers measured before it survive."""

from __future__ import annotations

import math
import os
import signal

import pytest

from evals import bench_model
from evals.bench_model import ChildDied, run_isolated


def _die_of_sigill() -> None:
    os.kill(os.getpid(), signal.SIGILL)


def _raise_value_error() -> None:
    raise ValueError("no such context length")


def test_the_child_answers_with_its_result() -> None:
    assert run_isolated(math.factorial, 5) == 120


def test_an_exception_in_the_child_is_raised_with_its_message() -> None:
    with pytest.raises(RuntimeError, match="ValueError: no such context length"):
        run_isolated(_raise_value_error)


def test_a_child_killed_by_a_signal_is_reported_by_name() -> None:
    with pytest.raises(ChildDied, match="SIGILL") as died:
        run_isolated(_die_of_sigill)
    assert died.value.exitcode == -signal.SIGILL


def test_sigill_in_llamacpp_names_the_rebuild(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_model.importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(bench_model, "run_isolated", lambda function, *args: run_isolated(_die_of_sigill))
    with pytest.raises(RuntimeError, match="qwen2.5-coder-0.5b: an instruction this CPU refuses.*GGML_AMX_TILE=OFF"):
        bench_model.bench_llamacpp("qwen2.5-coder-0.5b", [64])


def test_missing_llamacpp_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_model.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(RuntimeError, match="pip install llama-cpp-python"):
        bench_model.bench_llamacpp("qwen2.5-coder-0.5b", [64])
