"""The edit-replay harness on a literal two-version file (tiny model)."""

import pytest

from evals.edits import ModeSpec, hunks, load_suite, paired_difference, replay_edits, summarize

OLD = "def area(w, h):\n    return w * h\n\n\ndef main():\n    print(area(2, 3))\n"
NEW = "import math\n\n\ndef area(w, h):\n    return w * h\n\n\ndef circle(r):\n    return math.pi * r * r\n\n\ndef main():\n    print(area(2, 3))\n    print(circle(1))\n"


def test_hunks_hold_out_the_last_non_blank_new_line():
    found = hunks(OLD, NEW)
    targets = [h.new_lines[h.target] for h in found if h.target >= 0]
    assert targets == ["import math", "    return math.pi * r * r", "    print(circle(1))"]


def test_replay_predicts_each_held_out_line_in_every_mode(tiny_model):
    modes = [ModeSpec.parse(m) for m in ("recompute", "prefix", "pie", "pie+w32", "pie+s16", "pie+b1", "pie+w8+anchor")]
    records = replay_edits(tiny_model, {"geo.py": OLD}, {"geo.py": NEW}, modes=modes, limit=10)
    assert [r["target"] for r in records] == ["import math", "    return math.pi * r * r", "    print(circle(1))"]
    for record in records:
        # prefix re-encodes exactly: same greedy output as recompute, full agreement
        assert record["prefix"] == record["recompute"] and record["prefix_top1"] == 1.0
        assert 0.0 <= record["pie_top1"] <= 1.0
        assert 0.0 <= record["pie+w32_top1"] <= 1.0 and "pie+s16" in record
    summary = summarize(records, tiny_model.name, [m.name for m in modes], 256)
    assert summary["tasks"] == 3 and summary["modes"]["prefix"]["same_output_as_recompute"] == 1.0
    assert summary["modes"]["prefix"]["exact_match_minus_recompute"]["mean"] == 0.0
    # a budget of one changed token refreshes before every later prediction; 256 never does here
    assert summary["modes"]["pie+b1"]["refreshes"] >= 2 and summary["modes"]["pie"]["refreshes"] == 0


def test_mode_names_parse_and_reject_nonsense():
    assert ModeSpec.parse("pie+w32+b64") == ModeSpec("pie+w32+b64", "pie", cursor_window=32, stale_budget=64)
    assert ModeSpec.parse("pie+norefresh").refresh is False and ModeSpec.parse("pie+anchor").anchor is True
    for bad in ("pie+x3", "prefix+w32", "fast"):
        with pytest.raises(ValueError):
            ModeSpec.parse(bad)


def test_paired_difference_interval_covers_the_mean_and_is_zero_when_identical():
    same = paired_difference([1, 0, 1], [1, 0, 1])
    assert same == {"mean": 0.0, "ci95": [0.0, 0.0]}
    worse = paired_difference([0, 0, 1, 1, 0, 1], [1, 1, 1, 1, 1, 1])
    assert worse["mean"] == -0.5 and worse["ci95"][0] < -0.5 < worse["ci95"][1] < 0


def test_default_suite_lists_several_distinct_packages():
    suite = load_suite()
    assert len({r.package for r in suite}) >= 8 and all(r.old != r.new for r in suite)


def test_pie_with_the_whole_suffix_reencoded_is_exact_before_any_stale_row(tiny_model):
    # first hunk of a file: rows before it are exact, the hunk is new and a window
    # covering the whole suffix re-encodes everything after the cursor
    modes = [ModeSpec.parse(m) for m in ("recompute", "pie+w100000")]
    records = replay_edits(tiny_model, {"geo.py": OLD}, {"geo.py": NEW}, modes=modes, limit=1)
    assert records[0]["pie+w100000_top1"] == 1.0 and records[0]["pie+w100000"] == records[0]["recompute"]
