"""The report from a known event log: rates, Wilson intervals and the z-test, computed by hand below."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from telemetry.events import Event
from telemetry.report import format_table, summarize, write_plot
from telemetry.store import SqliteStore


def known_log() -> list[Event]:
    """Arm "a" (control): 100 shown, 30 accepted, 24 of those kept. Arm "b": 100 shown, 45 accepted, 27 kept."""
    events = []
    t = 1_700_000_000.0
    for arm, accepted, kept in (("a", 30, 24), ("b", 45, 27)):
        for i in range(100):
            sid = f"{arm}{i}"
            events.append(Event("shown", sid, t, experiment="x", arm=arm, shown_chars=10))
            if i < accepted:
                events.append(Event("accepted", sid, t + 1, experiment="x", arm=arm, shown_chars=10, accepted_chars=10))
                events.append(Event("persisted", sid, t + 31, experiment="x", arm=arm, kept=i < kept))
            else:
                events.append(Event("rejected", sid, t + 1, experiment="x", arm=arm))
            t += 60
    return events


def test_rates_intervals_and_significance_match_the_hand_computation():
    summary = summarize(known_log(), "x")
    a, b = summary["arms"]
    assert (a["arm"], a["shown"], a["accepted"], a["acceptance_rate"]) == ("a", 100, 30, 0.30)
    assert (b["arm"], b["shown"], b["accepted"], b["acceptance_rate"]) == ("b", 100, 45, 0.45)
    # Wilson, z = 1.96, n = 100, p = 0.45: centre (0.45 + 0.0192) / 1.0384 = 0.4518, half 0.0957
    assert a["acceptance_ci95"] == [0.2189, 0.3958]
    assert b["acceptance_ci95"] == [0.3561, 0.5476]
    assert (a["persisted"], a["persistence_checked"], a["persistence_rate"]) == (24, 30, 0.8)
    assert (b["persisted"], b["persistence_checked"], b["persistence_rate"]) == (27, 45, 0.6)
    assert a["persistence_ci95"] == [0.6269, 0.9049]
    comparison = summary["comparisons"][0]
    assert (comparison["arm"], comparison["control"]) == ("b", "a")
    # acceptance: pooled 0.375, se = sqrt(0.375 * 0.625 * 0.02) = 0.0685, z = 0.15 / 0.0685 = 2.191, p = 0.0285
    assert comparison["acceptance"] == {"difference": 0.15, "ci95": [0.0174, 0.2826], "z": 2.191, "p_value": 0.0285, "significant": True}
    # persistence: pooled 51/75 = 0.68, se = sqrt(0.68 * 0.32 * (1/45 + 1/30)) = 0.1100, z = -0.2 / 0.11 = -1.819, p = 0.0689
    assert comparison["persistence"]["z"] == -1.819
    assert comparison["persistence"]["p_value"] == 0.0689
    assert comparison["persistence"]["significant"] is False


def test_an_accept_and_a_reject_are_not_interchangeable():
    shown = [Event("shown", "s1", 1.0, arm="a"), Event("shown", "s2", 2.0, arm="a")]
    one_accept = summarize(shown + [Event("accepted", "s1", 3.0, arm="a"), Event("rejected", "s2", 3.0, arm="a")])
    two_rejects = summarize(shown + [Event("rejected", "s1", 3.0, arm="a"), Event("rejected", "s2", 3.0, arm="a")])
    assert one_accept["arms"][0]["accepted"] == 1 and one_accept["arms"][0]["acceptance_rate"] == 0.5
    assert two_rejects["arms"][0]["accepted"] == 0 and two_rejects["arms"][0]["acceptance_rate"] == 0.0


def test_a_suggestion_shown_again_or_delivered_twice_counts_once_and_partial_accepts_are_counted():
    events = [
        Event("shown", "s1", 1.0, shown_chars=20), Event("shown", "s1", 2.0, shown_chars=20, typed_ahead=True),
        Event("accepted", "s1", 3.0, shown_chars=20, accepted_chars=5), Event("accepted", "s1", 3.0, shown_chars=20, accepted_chars=5),
        Event("persisted", "s1", 40.0, kept=True), Event("persisted", "s1", 40.0, kept=True),
    ]
    arm = summarize(events)["arms"][0]
    assert (arm["shown"], arm["accepted"], arm["partially_accepted"], arm["accepted_share_of_chars"]) == (1, 1, 1, 0.25)
    assert (arm["persisted"], arm["persistence_checked"]) == (1, 1)


def test_table_and_plot(tmp_path: Path):
    events = known_log()
    text = format_table(summarize(events, "x"))
    assert "b vs a, acceptance: +15.0% [+1.7%, +28.3%], p = 0.0285 (significant)" in text
    page = write_plot(events, tmp_path / "plot.html", "x").read_text()
    assert page.count("<polyline") == 2 and "acceptance over time" in page


def test_cli_reads_a_sqlite_store(tmp_path: Path):
    store = SqliteStore(tmp_path / "t.db")
    store.write(known_log())
    out = subprocess.run([sys.executable, "-m", "livefim.cli", "telemetry", "report", "--store", str(tmp_path / "t.db"), "--json",
                          "--plot", str(tmp_path / "p.html")], capture_output=True, text=True, check=True)
    summary = json.loads(out.stdout)
    assert summary["experiment"] == "x" and [a["accepted"] for a in summary["arms"]] == [30, 45]
    assert (tmp_path / "p.html").is_file()
