"""The edit-replay harness on a literal two-version file (tiny model)."""

from evals.edits import hunks, replay_edits, summarize

OLD = "def area(w, h):\n    return w * h\n\n\ndef main():\n    print(area(2, 3))\n"
NEW = "import math\n\n\ndef area(w, h):\n    return w * h\n\n\ndef circle(r):\n    return math.pi * r * r\n\n\ndef main():\n    print(area(2, 3))\n    print(circle(1))\n"


def test_hunks_hold_out_the_last_non_blank_new_line():
    found = hunks(OLD, NEW)
    targets = [h.new_lines[h.target] for h in found if h.target >= 0]
    assert targets == ["import math", "    return math.pi * r * r", "    print(circle(1))"]


def test_replay_predicts_each_held_out_line_in_every_mode(tiny_model):
    records = replay_edits(tiny_model, {"geo.py": OLD}, {"geo.py": NEW}, limit=10)
    assert [r["target"] for r in records] == ["import math", "    return math.pi * r * r", "    print(circle(1))"]
    for record in records:
        # prefix re-encodes exactly: same greedy output as recompute, full agreement
        assert record["prefix"] == record["recompute"] and record["prefix_top1"] == 1.0
        assert 0.0 <= record["pie_top1"] <= 1.0
    summary = summarize(records, tiny_model.name, "geo", "1", "2", 256)
    assert summary["tasks"] == 3 and summary["modes"]["prefix"]["same_output_as_recompute"] == 1.0
