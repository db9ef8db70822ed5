"""``bench decode`` end to end on tiny models: every arm reproduces plain greedy output."""

from __future__ import annotations

from evals.bench_decode import _block_at, bench_decode, decode_tasks
from tests.test_speculate import noisy_copy


def test_every_arm_matches_plain_and_reports_its_passes(tiny_model):
    report = bench_decode(kinds=("humaneval-line", "humaneval-block"), per_kind=2, seed=1,
                          loaded=tiny_model, draft_loaded=noisy_copy(tiny_model, 0.3, 2))
    assert report["model"] == tiny_model.name and report["draft_model"] == "noisy"
    for kind in ("humaneval-line", "humaneval-block"):
        arms = report["by_kind"][kind]
        assert set(arms) == {"plain", "lookup", "draft", "combined"}
        for arm, row in arms.items():
            assert row["tasks"] == 2 and row["identical_to_plain"] == 1.0, (kind, arm, row)
        assert arms["plain"]["tokens_per_pass"] == 1.0 and arms["plain"]["acceptance_rate"] is None
        assert arms["draft"]["tokens_per_pass"] >= 1.0


def test_block_tasks_hold_out_a_run_of_lines():
    lines = ["def f():", "    a = 1", "    if a:", "        b = 2", "    return b", "", "x = f()"]
    assert _block_at(lines, 1) == 4  # a = 1 ... return b, stopping at the blank line
    assert _block_at(lines, 3) == 1  # "return b" dedents out of the if-body
    tasks = decode_tasks(("humaneval-block",), 3, seed=0)
    assert len(tasks) == 3 and all(t.max_tokens == 128 for t in tasks)
