"""Which files of a repository are worth indexing: .gitignore, vendored, binary, huge.

Why our own walker: the index must see exactly what the developer sees as "their
code". Dependencies checked into ``node_modules`` or a virtualenv would drown the
repository's own definitions (and cost minutes to parse), generated files listed
in ``.gitignore`` are noise, and one 40 MB JSON fixture must not stall indexing.

What is implemented of gitignore (the common rules, as ``git help gitignore``
states them):

* blank lines and ``#`` comments are skipped; ``\\#`` and ``\\!`` escape;
  unescaped trailing spaces are dropped;
* ``!pattern`` re-includes what an earlier pattern excluded (but, as in git, never
  a file whose directory is excluded: we do not descend into it);
* ``pattern/`` matches directories only;
* a pattern with a ``/`` at the start or in the middle is anchored to the
  directory of its ``.gitignore``; otherwise it matches a name at any depth;
* ``*`` and ``?`` do not cross ``/``, ``[a-z]`` / ``[!a-z]`` classes, ``**/x``,
  ``x/**`` and ``a/**/b``;
* ``.gitignore`` files in subdirectories apply below them and win over their
  parents; ``.git/info/exclude`` applies like a root ``.gitignore``.

Example::

    >>> rules = parse_gitignore("*.log\\n!keep.log\\nbuild/\\n/TODO\\n", base="")
    >>> [bool(ignored_by(rules, p, d)) for p, d in [("a/x.log", False), ("keep.log", False),
    ...      ("src/build", True), ("src/build", False), ("TODO", False), ("doc/TODO", False)]]
    [True, False, True, False, True, False]
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

VENDORED_DIRS = frozenset({
    ".git", ".hg", ".svn", "node_modules", "vendor", "third_party", ".venv", "venv",
    "site-packages", "dist", "build", "__pycache__", ".tox", ".nox", ".mypy_cache",
    ".pytest_cache", ".ruff_cache", ".eggs", ".idea", ".vscode",
})
DEFAULT_MAX_FILE_BYTES = 1_000_000
BINARY_SNIFF_BYTES = 8192


@dataclass(frozen=True)
class IgnoreRule:
    """One compiled line of a .gitignore, relative to the directory ``base`` ('' = repo root)."""

    base: str
    pattern: str
    regex: re.Pattern[str]
    negated: bool
    dir_only: bool


def _translate_glob(pattern: str) -> str:
    """Regex body for a gitignore glob (``*``/``?`` never cross ``/``; ``**`` does)."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*":
            if pattern.startswith("**", i):
                at_start = i == 0 or pattern[i - 1] == "/"
                if at_start and pattern.startswith("**/", i):
                    out.append("(?:.*/)?")  # **/x: x at any depth
                    i += 3
                    continue
                if at_start and i + 2 == n:
                    out.append(".*")  # x/**: everything inside
                    i += 2
                    continue
                out.append(".*")
                i += 2
                continue
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[":
            close = pattern.find("]", i + 2 if pattern[i + 1 : i + 2] in ("!", "^") else i + 1)
            if close == -1:
                out.append(re.escape(ch))
            else:
                body = pattern[i + 1 : close]
                if body[:1] in ("!", "^"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = close
        elif ch == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(ch))
        i += 1
    return "".join(out)


def parse_gitignore(text: str, base: str) -> list[IgnoreRule]:
    """Compile the lines of one .gitignore found in directory ``base`` (posix, '' = root)."""
    rules = []
    for raw in text.splitlines():
        line = raw.rstrip("\r")
        # Trailing spaces are dropped unless escaped with a backslash.
        stripped = line.rstrip(" ")
        if stripped.endswith("\\") and len(stripped) < len(line):
            stripped += " "
        line = stripped
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        if negated:
            line = line[1:]
        elif line.startswith("\\!") or line.startswith("\\#"):
            line = line[1:]
        dir_only = line.endswith("/")
        line = line.rstrip("/")
        if not line:
            continue
        anchored = "/" in line
        body = _translate_glob(line.lstrip("/"))
        regex = re.compile(("^" if anchored else "^(?:.*/)?") + body + "$")
        rules.append(IgnoreRule(base, raw, regex, negated, dir_only))
    return rules


def ignored_by(rules: list[IgnoreRule], rel_path: str, is_dir: bool) -> bool | None:
    """Whether the last rule matching ``rel_path`` ignores it (None when no rule matches).

    ``rules`` are in precedence order (root .gitignore first, deeper ones after);
    the last match wins, as in git.
    """
    verdict: bool | None = None
    for rule in rules:
        if rule.dir_only and not is_dir:
            continue
        if rule.base:
            if not rel_path.startswith(rule.base + "/"):
                continue
            local = rel_path[len(rule.base) + 1 :]
        else:
            local = rel_path
        if rule.regex.match(local):
            verdict = not rule.negated
    return verdict


@dataclass(frozen=True)
class WalkedFile:
    """A candidate for indexing: path relative to the root (posix), size and mtime from stat."""

    path: str
    absolute: Path
    size: int
    mtime_ns: int


@dataclass
class WalkReport:
    files: list[WalkedFile] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)


def _read_rules(directory: Path, base: str) -> list[IgnoreRule]:
    try:
        text = (directory / ".gitignore").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return parse_gitignore(text, base)


def root_rules(root: Path) -> list[IgnoreRule]:
    """``.git/info/exclude`` then the root ``.gitignore``."""
    rules: list[IgnoreRule] = []
    try:
        rules += parse_gitignore((root / ".git" / "info" / "exclude").read_text(encoding="utf-8", errors="replace"), "")
    except OSError:
        pass
    return rules + _read_rules(root, "")


def walk_repo(root: Path, extensions: frozenset[str], max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> WalkReport:
    """Every file under ``root`` with one of ``extensions`` that is not ignored, vendored or huge.

    Binary sniffing needs the file's bytes, so it happens when the file is read
    (``read_source``); directories named in ``VENDORED_DIRS`` and symlinks are
    never entered. Files come back sorted by path, so two walks of one tree agree.
    """
    report = WalkReport()
    stack: list[tuple[Path, str, list[IgnoreRule]]] = [(root, "", root_rules(root))]
    while stack:
        directory, rel_dir, rules = stack.pop()
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError:
            report.skipped["unreadable"] += 1
            continue
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            if entry.is_symlink():
                continue
            if entry.is_dir():
                if entry.name in VENDORED_DIRS:
                    report.skipped["vendored"] += 1
                    continue
                if ignored_by(rules, rel, True):
                    report.skipped["gitignored"] += 1
                    continue
                stack.append((Path(entry.path), rel, rules + _read_rules(Path(entry.path), rel)))
                continue
            suffix = os.path.splitext(entry.name)[1].lower()
            if suffix not in extensions:
                continue
            if ignored_by(rules, rel, False):
                report.skipped["gitignored"] += 1
                continue
            stat = entry.stat()
            if stat.st_size > max_file_bytes:
                report.skipped["huge"] += 1
                continue
            report.files.append(WalkedFile(rel, Path(entry.path), stat.st_size, stat.st_mtime_ns))
    report.files.sort(key=lambda f: f.path)
    return report


def is_vendored(rel_path: str) -> bool:
    return any(part in VENDORED_DIRS for part in rel_path.split("/")[:-1])


def is_ignored(root: Path, rel_path: str) -> bool:
    """The walker's verdict for one path, without walking: vendored dirs and every .gitignore above it."""
    if is_vendored(rel_path):
        return True
    parts = rel_path.split("/")
    rules = root_rules(root)
    for depth in range(1, len(parts)):
        prefix = "/".join(parts[:depth])
        if ignored_by(rules, prefix, True):
            return True
        rules = rules + _read_rules(root / prefix, prefix)
    return bool(ignored_by(rules, rel_path, False))


def read_source(path: Path, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> tuple[str | None, str]:
    """(text, "") for an indexable file, else (None, why): "huge", "binary", "undecodable", "unreadable".

    Binary means a NUL byte in the first 8 KiB, git's own heuristic.
    """
    try:
        data = path.read_bytes()
    except OSError:
        return None, "unreadable"
    if len(data) > max_file_bytes:
        return None, "huge"
    if b"\0" in data[:BINARY_SNIFF_BYTES]:
        return None, "binary"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None, "undecodable"
    return text.removeprefix("\ufeff"), ""
