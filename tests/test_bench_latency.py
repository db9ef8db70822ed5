"""The typing session ``livefim bench latency`` replays, on literal files: applying its steps gives the new release."""

from __future__ import annotations

from evals.bench_latency import Deletion, Key, _helps, session

OLD = {"pkg/a.py": "import os\n\n\ndef f(x):\n    return x\n", "pkg/same.py": "x = 1\n"}
NEW = {"pkg/a.py": "import os\nimport sys\n\n\ndef f(x):\n    y = x + 1\n    return y\n", "pkg/same.py": "x = 1\n"}


def apply(text: str, steps: list) -> str:
    lines = text.split("\n")
    for step in steps:
        if isinstance(step, Deletion):
            del lines[step.start_line : step.end_line]
        else:
            line = lines[step.line]
            assert len(line) >= step.column, (step, line)
            if step.text == "\n":
                lines[step.line : step.line + 1] = [line[: step.column], line[step.column :]]
            else:
                lines[step.line] = line[: step.column] + step.text + line[step.column :]
    return "\n".join(lines)


def test_the_steps_type_the_new_release_into_the_old_one():
    opened, steps = session(OLD, NEW, max_keys=10_000, seed=0, key_ms=140, files=5)
    assert list(opened) == ["file:///livefim-bench/pkg/a.py"]  # unchanged files are not replayed
    assert apply(OLD["pkg/a.py"], steps) == NEW["pkg/a.py"]
    keys = [s for s in steps if isinstance(s, Key)]
    assert "".join(k.text for k in keys) == "import sys\n    y = x + 1\n    return y\n"
    assert any(isinstance(s, Deletion) for s in steps)  # "    return x" goes before its replacement is typed
    assert all(k.wait_s > 0 for k in keys) and keys[0].upcoming.startswith("import sys")


def test_the_session_stops_at_the_key_budget():
    _, steps = session(OLD, NEW, max_keys=5, seed=0, key_ms=140, files=5)
    assert sum(isinstance(s, Key) for s in steps) <= len("import sys\n")  # the hunk under way is finished


def test_a_suggestion_helps_when_it_starts_with_what_comes_next():
    assert _helps("return y\n", "return y\n")
    assert _helps("ret", "return y")  # all of a short one
    assert not _helps("yield y", "return y")
    assert not _helps("re", "rx")
