"""``bench decode`` end to end on tiny models: every arm reproduces plain greedy output."""

from __future__ import annotations

from evals.bench_decode import DecodeTask, _block_at, bench_decode, decode_tasks, fim_prompt
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


def test_repository_tasks_can_carry_the_context_the_engine_would_retrieve(tiny_model, tmp_path):
    root = tmp_path / "geo"
    root.mkdir()
    (root / "shapes.py").write_text("def circle_area(radius):\n    return 3.14159 * radius * radius\n")
    app = "from shapes import circle_area\n\n\ndef report(r):\n    return circle_area(r)\n"
    (root / "app.py").write_text(app)
    task = DecodeTask("repo-line", "geo/app.py:5", "app.py", app[: app.index("    return")], "\n", 16, str(root))
    bare, bare_marker, _ = fim_prompt(tiny_model, task)
    ids, marker, _ = fim_prompt(tiny_model, task, {})
    text = tiny_model.tokenizer.decode(ids)
    assert text.startswith("<|repo_name|>geo\n<|file_sep|>shapes.py\ndef circle_area(radius):")
    assert ids[-len(bare):] == bare and marker == bare_marker + len(ids) - len(bare)  # the same FIM prompt after it
    assert "circle_area(radius)" not in tiny_model.tokenizer.decode(bare)


def test_a_larger_prompt_budget_poses_more_of_the_file(tiny_model):
    from engine.prompt import PromptBudget

    lines = [f"value_{i} = {i} * {i}\n" for i in range(400)]
    task = DecodeTask("repo-line", "long.py:300", "long.py", "".join(lines[:300]), "\n" + "".join(lines[301:]), 16)
    window, _, _ = fim_prompt(tiny_model, task)  # the windowed prompt: 1,536 + 512 tokens at most
    session, marker, _ = fim_prompt(tiny_model, task, budget=PromptBudget(8192, 8192))  # a whole-document session
    assert len(window) < 2100 < len(session)
    assert tiny_model.tokenizer.decode(session[:marker]).count("value_0 = 0 * 0") == 1
