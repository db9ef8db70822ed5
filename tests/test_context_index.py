"""The repository index: build, incremental updates from the editor, refresh from disk."""

from pathlib import Path

from context.index import build_index


def write(root: Path, files: dict[str, str]) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)


def names_in(index, path: str) -> set[str]:
    return set(index.file_names(path))


def test_build_reports_progress_and_indexes_every_supported_language(tmp_path):
    write(tmp_path, {
        "a.py": "def alpha():\n    return 1\n",
        "b.js": "function beta() {\n  return 2;\n}\n",
        "c.go": "package c\n\nfunc Gamma() int {\n\treturn 3\n}\n",
        "README.md": "# not code\n",
    })
    calls = []
    index = build_index(tmp_path, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert sorted(index.files) == ["a.py", "b.js", "c.go"]
    assert [r.path for r in index.definitions("beta")] == ["b.js"]
    assert index.last_report.files_parsed == 3


def test_an_edit_replaces_a_files_symbols_chunks_and_terms(tmp_path):
    write(tmp_path, {"shapes.py": "def circle_area(r):\n    return 3.14 * r * r\n", "app.py": "x = 1\n"})
    index = build_index(tmp_path)
    old_chunks = set(index.files["shapes.py"].chunk_ids)
    changed = index.update_file("shapes.py", "def square_area(s):\n    return s * s\n\n\ndef cube_volume(s):\n    return s ** 3\n")
    assert changed
    assert index.definitions("circle_area") == []  # old symbol gone
    assert {r.symbol.name for r in index.definitions("square_area") + index.definitions("cube_volume")} == {"square_area", "cube_volume"}
    assert not old_chunks & set(index.chunks)  # old chunks gone from the chunk table...
    assert not any(cid in index.bm25 for cid in old_chunks)  # ...and from BM25
    hits = index.bm25.search(["circle"]).hits
    assert hits == []  # nothing lexical left of the old text
    assert [index.chunks[c].path for c, _ in index.bm25.search(["cube"]).hits] == ["shapes.py"]
    assert index.files["shapes.py"].mtime_ns == -1  # from the editor: a later refresh re-reads the disk


def test_deleting_a_file_removes_everything_it_contributed(tmp_path):
    write(tmp_path, {"pkg/util.py": "def helper():\n    pass\n", "pkg/main.py": "from .util import helper\n"})
    index = build_index(tmp_path)
    assert index.python_module_files("pkg.util") == {"pkg/util.py"}
    assert index.update_file(tmp_path / "pkg" / "util.py", None)  # absolute paths work too
    assert "pkg/util.py" not in index.files
    assert index.definitions("helper") == []
    assert index.python_module_files("pkg.util") == set()
    assert index.dir_files("pkg") == {"pkg/main.py"}
    assert not index.update_file("pkg/util.py", None)  # already gone: no change


def test_update_ignores_paths_the_walker_would_skip(tmp_path):
    write(tmp_path, {".gitignore": "generated/\n", "a.py": "x = 1\n"})
    index = build_index(tmp_path)
    assert not index.update_file("node_modules/lib/index.js", "function f() {}\n")
    assert not index.update_file("generated/out.py", "def f():\n    pass\n")
    assert not index.update_file("notes.txt", "hello")
    assert not index.update_file("/somewhere/else/x.py", "def f():\n    pass\n")  # outside the root
    assert not index.update_file("../x.py", "def f():\n    pass\n")
    assert index.update_file("./sub/../b.py", "def f():\n    pass\n") and "b.py" in index.files
    assert sorted(index.files) == ["a.py", "b.py"]


def test_refresh_picks_up_new_changed_and_deleted_files_only(tmp_path):
    write(tmp_path, {"a.py": "def a():\n    pass\n", "b.py": "def b():\n    pass\n"})
    index = build_index(tmp_path)
    write(tmp_path, {"c.py": "def c():\n    pass\n", "a.py": "def a2():\n    pass\n"})
    (tmp_path / "b.py").unlink()
    report = index.refresh()
    assert (report.files_parsed, report.files_removed) == (2, 1)
    assert sorted(index.files) == ["a.py", "c.py"]
    assert index.definitions("a") == [] and index.definitions("b") == []
    assert index.refresh().files_parsed == 0  # nothing changed since
