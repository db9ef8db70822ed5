"""Which files get indexed: gitignore rules, vendored directories, binaries, huge files."""

from pathlib import Path

import pytest

from context.walk import ignored_by, is_ignored, parse_gitignore, read_source, walk_repo

EXTENSIONS = frozenset({".py", ".js"})


def write(root: Path, files: dict[str, str | bytes]) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)


def walked(root: Path, **kwargs) -> list[str]:
    return [f.path for f in walk_repo(root, EXTENSIONS, **kwargs).files]


@pytest.mark.parametrize(
    "pattern, path, is_dir, expected",
    [
        ("*.py", "a/b/gen.py", False, True),  # no slash: matches a name at any depth
        ("/gen.py", "gen.py", False, True),  # leading slash: anchored to the .gitignore's dir
        ("/gen.py", "a/gen.py", False, None),
        ("doc/*.py", "doc/x.py", False, True),  # a middle slash anchors too
        ("doc/*.py", "src/doc/x.py", False, None),
        ("doc/*.py", "doc/sub/x.py", False, None),  # * does not cross /
        ("out/", "out", True, True),  # trailing slash: directories only
        ("out/", "out", False, None),
        ("**/cache", "a/b/cache", True, True),
        ("a/**/z.py", "a/z.py", False, True),
        ("a/**/z.py", "a/b/c/z.py", False, True),
        ("logs/**", "logs/x/y.py", False, True),
        ("te?t.py", "test.py", False, True),
        ("[abc].py", "b.py", False, True),
        ("[!abc].py", "b.py", False, None),
        ("\\#x.py", "#x.py", False, True),  # escaped hash is a pattern, not a comment
        ("# comment", "# comment", False, None),
    ],
)
def test_gitignore_patterns(pattern, path, is_dir, expected):
    assert ignored_by(parse_gitignore(pattern + "\n", base=""), path, is_dir) is expected


def test_negation_re_includes_and_the_last_matching_rule_wins():
    rules = parse_gitignore("*.py\n!keep.py\n", base="")
    assert ignored_by(rules, "x.py", False) is True
    assert ignored_by(rules, "keep.py", False) is False
    rules = parse_gitignore("!keep.py\n*.py\n", base="")  # order matters: *.py comes last
    assert ignored_by(rules, "keep.py", False) is True


def test_walk_honours_root_and_nested_gitignores(tmp_path):
    write(tmp_path, {
        ".gitignore": "*.gen.py\nbuildout/\n/local.py\n",
        "app.py": "x = 1\n",
        "local.py": "x = 1\n",  # anchored: ignored at the root only
        "pkg/local.py": "x = 1\n",
        "pkg/model.gen.py": "x = 1\n",
        "buildout/a.py": "x = 1\n",
        "pkg/buildout/a.py": "x = 1\n",  # dir pattern without slash inside: any depth
        "pkg/.gitignore": "secret.py\n!model.gen.py\n",  # deeper file: applies below, wins
        "pkg/secret.py": "x = 1\n",
        "secret.py": "x = 1\n",  # the nested rule does not reach up
        "notes.txt": "not an indexed language\n",
    })
    assert walked(tmp_path) == ["app.py", "pkg/local.py", "pkg/model.gen.py", "secret.py"]
    assert is_ignored(tmp_path, "pkg/secret.py") and is_ignored(tmp_path, "buildout/a.py")
    assert not is_ignored(tmp_path, "pkg/model.gen.py")


def test_git_info_exclude_applies_like_a_root_gitignore(tmp_path):
    write(tmp_path, {".git/info/exclude": "scratch.py\n", "scratch.py": "x = 1\n", "main.py": "x = 1\n"})
    assert walked(tmp_path) == ["main.py"]


def test_vendored_directories_are_never_entered(tmp_path):
    write(tmp_path, {
        "src/app.js": "let a = 1;\n",
        "node_modules/left-pad/index.js": "module.exports = 1;\n",
        "vendor/lib.py": "x = 1\n",
        "third_party/x.py": "x = 1\n",
        ".venv/lib/site.py": "x = 1\n",
        "lib/site-packages/pkg.py": "x = 1\n",
        "dist/bundle.js": "x\n",
        "build/gen.py": "x = 1\n",
        "pkg/__pycache__/m.py": "x = 1\n",
        ".git/hooks/h.py": "x = 1\n",
    })
    report = walk_repo(tmp_path, EXTENSIONS)
    assert [f.path for f in report.files] == ["src/app.js"]
    assert report.skipped["vendored"] == 9


def test_huge_files_are_skipped_by_size_and_binaries_by_a_nul_byte(tmp_path):
    write(tmp_path, {"big.py": "x = 1\n" * 100, "small.py": "x = 1\n", "blob.py": b"x = 1\n\x00\x01\x02"})
    report = walk_repo(tmp_path, EXTENSIONS, max_file_bytes=100)
    assert [f.path for f in report.files] == ["blob.py", "small.py"]
    assert report.skipped["huge"] == 1
    assert read_source(tmp_path / "blob.py") == (None, "binary")
    assert read_source(tmp_path / "small.py") == ("x = 1\n", "")
    write(tmp_path, {"latin.py": "caf\xe9 = 1\n".encode("latin-1")})
    assert read_source(tmp_path / "latin.py") == (None, "undecodable")
