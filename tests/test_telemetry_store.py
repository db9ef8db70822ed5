"""Telemetry stores (sqlite, a real Redis stream) and the recorder that never loses an event to a brief outage."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from telemetry.events import Event
from telemetry.experiments import Arm, Experiment, ExperimentError, parse_experiments
from telemetry import store as store_module
from telemetry.store import Recorder, RedisStreamStore, SqliteStore


def _events(n: int, start: int = 0) -> list[Event]:
    return [Event("shown", f"s{i}", float(i), arm="a") for i in range(start, start + n)]


def test_event_kinds_are_checked():
    with pytest.raises(ValueError, match="event kind"):
        Event("clicked", "s1", 0.0)


def test_sqlite_store_keeps_time_order_across_writers(tmp_path: Path):
    path = tmp_path / "t.db"
    SqliteStore(path).write(_events(3, 10))
    SqliteStore(path).write(_events(3, 0))
    assert [e.suggestion_id for e in SqliteStore(path).read()] == ["s0", "s1", "s2", "s10", "s11", "s12"]


class FlakyStore:
    """A store that refuses the first ``failures`` writes, as a restarting server would."""

    def __init__(self, failures: int) -> None:
        self.failures, self.events = failures, []

    def write(self, events):  # noqa: ANN001
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("store restarting")
        self.events += events

    def read(self):
        return iter(self.events)


def test_recorder_keeps_events_while_the_store_is_down_and_delivers_them_after():
    flaky = FlakyStore(failures=3)
    recorder = Recorder(flaky, interval_s=0.01, max_backoff_s=0.05)
    for event in _events(50):
        recorder.record(event)
    deadline = time.monotonic() + 5
    while len(flaky.events) < 50 and time.monotonic() < deadline:
        time.sleep(0.02)
    recorder.close()
    assert [e.suggestion_id for e in flaky.events] == [f"s{i}" for i in range(50)]
    assert recorder.dropped == 0 and recorder.pending == 0


def test_recorder_drops_the_oldest_only_past_its_bound(monkeypatch):
    monkeypatch.setattr(store_module, "MAX_BUFFERED", 10)
    flaky = FlakyStore(failures=10**9)
    recorder = Recorder(flaky, interval_s=10)
    for event in _events(15):
        recorder.record(event)
    assert recorder.pending == 10 and recorder.dropped == 5
    flaky.failures = 0
    assert recorder.flush()
    assert [e.suggestion_id for e in flaky.events] == [f"s{i}" for i in range(5, 15)]


def test_a_disabled_recorder_keeps_nothing():
    recorder = Recorder(None)
    recorder.record(_events(1)[0])
    assert not recorder.enabled and recorder.pending == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_redis(port: int) -> subprocess.Popen:
    process = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("redis-server did not start")


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server (apt-get install redis-server; .ci/run has it)")
def test_redis_stream_store_survives_a_redis_restart():
    port = _free_port()
    server = _start_redis(port)
    stream = f"livefim:test:{uuid.uuid4().hex}"
    try:
        recorder = Recorder(RedisStreamStore(f"redis://127.0.0.1:{port}/0", stream), interval_s=0.05, max_backoff_s=0.2)
        for event in _events(5):
            recorder.record(event)
        assert recorder.flush()
        assert [e.suggestion_id for e in RedisStreamStore(f"redis://127.0.0.1:{port}/0", stream).read()] == [f"s{i}" for i in range(5)]
        server.terminate()
        server.wait(10)
        for event in _events(5, 5):  # recorded while Redis is down
            recorder.record(event)
        time.sleep(0.3)
        assert recorder.pending == 5
        server = _start_redis(port)  # back (empty: this server keeps nothing on disk)
        deadline = time.monotonic() + 10
        while recorder.pending and time.monotonic() < deadline:
            time.sleep(0.05)
        recorder.close()
        read = [e.suggestion_id for e in RedisStreamStore(f"redis://127.0.0.1:{port}/0", stream).read()]
        assert read == [f"s{i}" for i in range(5, 10)]
    finally:
        server.terminate()
        server.wait(10)


def test_arms_are_stable_per_user_and_follow_the_weights():
    experiment = Experiment("e", (Arm("a", 1.0), Arm("b", 3.0)))
    users = [f"user-{i}" for i in range(4000)]
    first = [experiment.assign(u).name for u in users]
    assert first == [experiment.assign(u).name for u in users]  # stable
    share_b = first.count("b") / len(first)
    assert 0.72 < share_b < 0.78  # 3:1 weights, 4000 users: sd of the share is 0.007
    other = Experiment("f", (Arm("a", 1.0), Arm("b", 3.0)))
    assert [other.assign(u).name for u in users] != first  # another experiment splits independently


def test_experiment_files_are_validated():
    good = {"experiment": [{"name": "m", "arm": [{"name": "pie", "options": {"cache_mode": "pie"}}, {"name": "rec", "weight": 2,
                                                                                                       "options": {"cache_mode": "recompute"}}]}]}
    (experiment,) = parse_experiments(good)
    assert [a.name for a in experiment.arms] == ["pie", "rec"] and experiment.arms[1].weight == 2.0
    with pytest.raises(ExperimentError, match="unknown option 'turbo'"):
        parse_experiments({"experiment": [{"name": "m", "arm": [{"name": "a", "options": {"turbo": True}}, {"name": "b"}]}]})
    with pytest.raises(ExperimentError, match="at least two arms"):
        parse_experiments({"experiment": [{"name": "m", "arm": [{"name": "a"}]}]})
    with pytest.raises(ExperimentError, match="wrong type"):
        parse_experiments({"experiment": [{"name": "m", "arm": [{"name": "a", "options": {"retrieval": "yes"}}, {"name": "b"}]}]})
    assert parse_experiments({"experiment": [{"name": "off", "enabled": False}]}) == []
