"""Persistence: atomic files with a checksum, corrupt files rebuilt, Redis round trip."""

import uuid
from pathlib import Path

import pytest

from context.index import build_index
from context.store import (
    FORMAT_VERSION,
    CorruptIndexError,
    DiskStore,
    RedisStore,
    dumps,
    load_or_build,
    loads,
    repo_key,
)


def make_repo(root: Path) -> Path:
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "shapes.py").write_text("class Circle:\n    def area(self):\n        return 3.14\n")
    (root / "pkg" / "app.py").write_text("from .shapes import Circle\n\nc = Circle()\n")
    return root


def same_index(a, b) -> bool:
    return (
        a.files.keys() == b.files.keys()
        and {i: (c.path, c.start_line, c.end_line, c.text, c.symbols) for i, c in a.chunks.items()}
        == {i: (c.path, c.start_line, c.end_line, c.text, c.symbols) for i, c in b.chunks.items()}
        and [f.imports for f in a.files.values()] == [f.imports for f in b.files.values()]
        and a.bm25.search(["circle", "area"]).hits == b.bm25.search(["circle", "area"]).hits
    )


def test_round_trip_through_bytes_keeps_everything(tmp_path):
    index = build_index(make_repo(tmp_path / "repo"))
    copy = loads(dumps(index))
    assert same_index(index, copy)
    assert [r.path for r in copy.definitions("Circle")] == ["pkg/shapes.py"]


@pytest.mark.parametrize("damage", ["truncate", "flip", "version", "garbage"])
def test_damaged_bytes_are_rejected_never_half_read(tmp_path, damage):
    data = dumps(build_index(make_repo(tmp_path / "repo")))
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        data = data[:-10] + bytes([data[-10] ^ 0xFF]) + data[-9:]
    elif damage == "version":
        data = data[:8] + (FORMAT_VERSION + 1).to_bytes(4, "little") + data[12:]
    else:
        data = b"not an index at all, just some bytes that are long enough" * 2
    with pytest.raises(CorruptIndexError):
        loads(data)


def test_disk_store_lives_under_livefim_home_and_writes_atomically(tmp_path, monkeypatch):
    monkeypatch.setenv("LIVEFIM_HOME", str(tmp_path / "home"))
    repo = make_repo(tmp_path / "repo")
    index, outcome = load_or_build(repo)
    assert outcome.status == "built"
    directory = tmp_path / "home" / "index" / repo_key(repo)
    assert sorted(p.name for p in directory.iterdir()) == ["index.lfi", "repo.txt"]  # no temp file left
    again, outcome = load_or_build(repo)
    assert outcome.status == "loaded" and outcome.files_parsed == 0
    assert same_index(index, again)


def test_a_corrupt_index_file_is_detected_and_rebuilt(tmp_path):
    store = DiskStore(tmp_path / "store")
    repo = make_repo(tmp_path / "repo")
    load_or_build(repo, store)
    path = Path(store.location(repo))
    path.write_bytes(path.read_bytes()[:-100])  # a crash that lost the tail
    index, outcome = load_or_build(repo, store)
    assert outcome.status == "rebuilt" and "truncated" in outcome.detail
    assert [r.path for r in index.definitions("Circle")] == ["pkg/shapes.py"]
    assert store.load(repo) is not None  # the rebuilt index was saved over the bad one


def test_a_loaded_index_catches_up_with_changes_made_while_it_was_stored(tmp_path):
    store = DiskStore(tmp_path / "store")
    repo = make_repo(tmp_path / "repo")
    load_or_build(repo, store)
    (repo / "pkg" / "shapes.py").write_text("class Square:\n    pass\n")
    index, outcome = load_or_build(repo, store)
    assert outcome.status == "loaded" and outcome.files_parsed == 1
    assert index.definitions("Circle") == [] and index.definitions("Square")


@pytest.fixture
def redis_store():
    redis = pytest.importorskip("redis")
    store = RedisStore("redis://127.0.0.1:6379/0", prefix=f"livefim-test:{uuid.uuid4().hex}")
    try:
        store.ping()
    except redis.RedisError as error:
        pytest.skip(f"no Redis at 127.0.0.1:6379 ({error}); start one with redis-server --daemonize yes")
    yield store
    for key in store._client.scan_iter(f"{store.prefix}:*"):
        store._client.delete(key)


def test_redis_store_round_trip_and_corruption(tmp_path, redis_store):
    repo = make_repo(tmp_path / "repo")
    index, outcome = load_or_build(repo, redis_store)
    assert outcome.status == "built"
    assert same_index(index, redis_store.load(repo))
    key = redis_store.key(repo)
    redis_store._client.set(key, redis_store._client.get(key)[:-5])
    _, outcome = load_or_build(repo, redis_store)
    assert outcome.status == "rebuilt" and "truncated" in outcome.detail
