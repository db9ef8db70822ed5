"""The HumanEval-Infilling harness scores known answers correctly."""

import pytest

from evals.humaneval import exact_match, load_tasks, passes


@pytest.fixture(scope="module")
def task():
    return load_tasks("singleline")[0]


def test_canonical_solution_passes(task):
    assert passes(task, task.canonical_solution)


def test_wrong_line_fails(task):
    assert not passes(task, "    return None\n")


def test_infinite_loop_times_out_as_a_failure(task):
    indent = task.canonical_solution[: len(task.canonical_solution) - len(task.canonical_solution.lstrip())]
    assert not passes(task, f"{indent}while True: pass\n", timeout_s=2)


def test_exact_match_ignores_trailing_whitespace_only():
    assert exact_match("    x = 1  \n", "    x = 1\n")
    assert not exact_match("x = 1\n", "    x = 1\n")


def test_seeded_subset_is_reproducible():
    first = [t.task_id for t in load_tasks("singleline", limit=20, seed=3)]
    assert first == [t.task_id for t in load_tasks("singleline", limit=20, seed=3)]
    assert len(set(first)) == 20
    assert first != [t.task_id for t in load_tasks("singleline", limit=20, seed=4)]
