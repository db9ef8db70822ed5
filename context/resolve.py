"""Follow an import to the files and definitions it names, per language's module system.

Why per language: ``from ..util import parse`` (Python, relative to the package),
``import { parse } from "./util"`` (JS/TS, relative to the file, extension
omitted), ``import "example.com/x/util"`` (Go, a directory), ``use crate::util::parse``
(Rust, from the crate root) and ``import com.x.Util;`` (Java, a package path) all
name the same thing differently. Each ``_<resolver>_module_files`` turns one module
string into the repository files that implement it; the rest is shared:
look the imported name up in those files, follow re-exports a few hops
(``from .events import *`` in an ``__init__.py``), and fall back to "the name is a
submodule" (``from . import events``).

Example::

    >>> import tempfile
    >>> from pathlib import Path
    >>> from context.index import build_index
    >>> root = Path(tempfile.mkdtemp())
    >>> (root / "pkg").mkdir()
    >>> _ = (root / "pkg" / "__init__.py").write_text("from .shapes import Circle\\n")
    >>> _ = (root / "pkg" / "shapes.py").write_text("class Circle:\\n    pass\\n")
    >>> index = build_index(root)
    >>> target = resolve_import(index, "app.py", Import("pkg", "Circle", binding="Circle"))
    >>> [(ref.path, ref.symbol.name) for ref in target.definitions]
    [('pkg/shapes.py', 'Circle')]
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from pathlib import PurePosixPath

from context.index import RepoIndex, SymbolRef
from context.languages import language_for_path
from context.symbols import Import

MAX_REEXPORT_HOPS = 3
JS_EXTENSIONS = (".ts", ".tsx", ".d.ts", ".js", ".jsx", ".mjs", ".cjs")


@dataclass(frozen=True)
class Target:
    """What a local name stands for: definitions, or a module (its files) for attribute lookups."""

    definitions: tuple[SymbolRef, ...] = ()
    modules: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.definitions or self.modules)


# --- module string -> files ---------------------------------------------------------


def _python_module_files(index: RepoIndex, from_path: str, module: str) -> list[str]:
    if module.startswith("."):
        dots = len(module) - len(module.lstrip("."))
        package = PurePosixPath(from_path).parent
        for _ in range(dots - 1):
            package = package.parent
        rest = module[dots:].replace(".", "/")
        base = (package / rest).as_posix() if rest else package.as_posix()
        base = "" if base == "." else base
        found = [p for p in (f"{base}.py", f"{base}.pyi", f"{base}/__init__.py" if base else "__init__.py") if p in index.files]
        return found
    holders = index.python_module_files(module)
    if len(holders) <= 1:
        return sorted(holders)
    # Several files answer to this name (src/pkg/x.py and tests/pkg/x.py): the closest wins.
    here = PurePosixPath(from_path).parent.parts

    def closeness(path: str) -> tuple[int, int, str]:
        parts = PurePosixPath(path).parent.parts
        common = 0
        for a, b in zip(here, parts):
            if a != b:
                break
            common += 1
        return (-common, len(parts), path)

    return [min(holders, key=closeness)]


def _javascript_module_files(index: RepoIndex, from_path: str, module: str) -> list[str]:
    if not module.startswith("."):
        return []  # a package from node_modules: not ours
    base = posixpath.normpath(posixpath.join(posixpath.dirname(from_path), module))
    candidates = [base] + [base + ext for ext in JS_EXTENSIONS] + [f"{base}/index{ext}" for ext in JS_EXTENSIONS]
    if base.endswith(".js"):  # TS sources import "./x.js" for x.ts
        candidates += [base[:-3] + ext for ext in (".ts", ".tsx")]
    for candidate in candidates:
        if candidate in index.files:
            return [candidate]
    return []


def _directories_ending_with(index: RepoIndex, suffix: str) -> list[str]:
    return sorted(d for d in index.directories() if d == suffix or d.endswith("/" + suffix))


def _go_module_files(index: RepoIndex, from_path: str, module: str) -> list[str]:
    parts = [p for p in module.split("/") if p]
    for start in range(len(parts)):  # longest suffix of the import path that is a directory here
        directory = "/".join(parts[start:])
        if index.has_directory(directory):
            return sorted(p for p in index.dir_files(directory) if p.endswith(".go"))
    return []


def _rust_crate_root(index: RepoIndex, from_path: str) -> PurePosixPath:
    """The nearest directory above ``from_path`` holding lib.rs or main.rs (else the root)."""
    directory = PurePosixPath(from_path).parent
    while True:
        if any((directory / root_file).as_posix() in index.files for root_file in ("lib.rs", "main.rs")):
            return directory
        if directory.as_posix() == ".":
            return directory
        directory = directory.parent


def _rust_module_dir(from_path: str) -> PurePosixPath:
    """The directory holding the submodules of the module ``from_path`` defines."""
    path = PurePosixPath(from_path)
    if path.name in ("lib.rs", "main.rs", "mod.rs"):
        return path.parent
    return path.parent / path.stem


def _rust_module_files(index: RepoIndex, from_path: str, module: str) -> list[str]:
    segments = [s for s in module.split("::") if s]
    if not segments:
        return []
    if segments[0] == "crate":
        directory, segments = _rust_crate_root(index, from_path), segments[1:]
    elif segments[0] == "self":
        directory, segments = _rust_module_dir(from_path), segments[1:]
    elif segments[0] == "super":
        directory = _rust_module_dir(from_path).parent
        segments = segments[1:]
        while segments and segments[0] == "super":
            directory, segments = directory.parent, segments[1:]
    else:
        directory = _rust_crate_root(index, from_path)  # 2015-style paths from the crate root
    if not segments:
        for root_file in ("mod.rs", "lib.rs", "main.rs"):
            candidate = (directory / root_file).as_posix()
            if candidate in index.files:
                return [candidate]
        parent_file = directory.parent / f"{directory.name}.rs"
        return [parent_file.as_posix()] if parent_file.as_posix() in index.files else []
    base = directory.joinpath(*segments)
    for candidate in (f"{base.as_posix()}.rs", f"{base.as_posix()}/mod.rs"):
        if candidate in index.files:
            return [candidate]
    return []


def _java_module_files(index: RepoIndex, from_path: str, module: str) -> list[str]:
    path = module.replace(".", "/")
    directories = _directories_ending_with(index, path)
    if directories:
        return sorted(p for d in directories for p in index.dir_files(d) if p.endswith(".java"))
    return sorted(p for p in index.files if p == f"{path}.java" or p.endswith(f"/{path}.java"))


_MODULE_FILES = {
    "python": _python_module_files,
    "javascript": _javascript_module_files,
    "go": _go_module_files,
    "rust": _rust_module_files,
    "java": _java_module_files,
}
_SEPARATOR = {"python": ".", "javascript": "/", "go": "/", "rust": "::", "java": "."}


def module_files(index: RepoIndex, from_path: str, module: str) -> list[str]:
    """The files of the repository that implement ``module`` as written in ``from_path``."""
    spec = language_for_path(from_path)
    if spec is None:
        return []
    key = ("module", from_path, module)
    cached = index.resolution_cache.get(key)
    if cached is None:
        cached = _MODULE_FILES[spec.resolver](index, from_path, module)
        index.resolution_cache[key] = cached
    return list(cached)  # type: ignore[arg-type]


def _join(resolver: str, module: str, name: str) -> str:
    if resolver == "python" and module.endswith("."):
        return module + name
    return f"{module}{_SEPARATOR[resolver]}{name}" if module else name


# --- names -> definitions -----------------------------------------------------------


def lookup_in_files(index: RepoIndex, files: list[str], name: str, hops: int = 0) -> Target:
    """``name`` as seen from outside the module made of ``files``.

    Own top-level definitions first; else members (Go methods, Java static
    imports); else what those files import under that name or via a wildcard
    (re-exports), up to ``MAX_REEXPORT_HOPS``; else a submodule of that name.
    """
    top, members = [], []
    for path in files:
        for ref in index.file_definitions(path, name):
            (members if ref.symbol.container else top).append(ref)
    if top or members:
        return Target(definitions=tuple(top or members))
    if hops < MAX_REEXPORT_HOPS:
        for path in files:
            entry = index.files.get(path)
            if entry is None:
                continue
            for imp in entry.imports:
                if imp.binding == name:
                    target = resolve_import(index, path, imp, hops + 1)
                    if target:
                        return target
            for imp in entry.imports:
                if imp.wildcard:
                    target = lookup_in_files(index, module_files(index, path, imp.module), name, hops + 1)
                    if target.definitions:
                        return target
    return Target()


def resolve_import(index: RepoIndex, from_path: str, imp: Import, hops: int = 0) -> Target:
    """What the local name bound by ``imp`` in ``from_path`` stands for."""
    key = ("import", from_path, imp, hops)
    cached = index.resolution_cache.get(key)
    if cached is not None:
        return cached  # type: ignore[return-value]
    target = _resolve_import(index, from_path, imp, hops)
    index.resolution_cache[key] = target
    return target


def _resolve_import(index: RepoIndex, from_path: str, imp: Import, hops: int) -> Target:
    spec = language_for_path(from_path)
    if spec is None:
        return Target()
    files = module_files(index, from_path, imp.module)
    if imp.wildcard or imp.name is None:
        return Target(modules=tuple(files))
    if imp.name == "default":  # JS default export: usually named like the binding
        target = lookup_in_files(index, files, imp.binding or "", hops) if imp.binding else Target()
        if target.definitions:
            return target
        defaults = [
            SymbolRef(cid, path, symbol)
            for path in files
            for cid in index.files[path].chunk_ids
            if "export default" in index.chunks[cid].text
            for symbol in index.chunks[cid].symbols[:1]
        ]
        return Target(definitions=tuple(defaults[:1]), modules=tuple(files))
    if files:
        target = lookup_in_files(index, files, imp.name, hops)
        if target:
            return target
    submodule = module_files(index, from_path, _join(spec.resolver, imp.module, imp.name))
    return Target(modules=tuple(submodule))


def resolve_attribute(index: RepoIndex, target: Target, attribute: str) -> Target:
    """``target.attribute``: a name in a module, or a member of a class / impl / type."""
    if target.modules:
        found = lookup_in_files(index, list(target.modules), attribute)
        if found:
            return found
    members = []
    for ref in target.definitions:
        for member in index.file_definitions(ref.path, attribute):
            if member.symbol.container == ref.symbol.name:
                members.append(member)
        if not members:  # Rust/Go: methods live in impl blocks or files beside the type
            for member in index.definitions(attribute):
                if member.symbol.container == ref.symbol.name and member.path != ref.path:
                    members.append(member)
    return Target(definitions=tuple(members))


def same_package_definitions(index: RepoIndex, from_path: str, name: str) -> list[SymbolRef]:
    """Go and Java see their package's other files without imports: top-level ``name`` there."""
    directory = PurePosixPath(from_path).parent.as_posix()
    directory = "" if directory == "." else directory
    extension = PurePosixPath(from_path).suffix
    refs = []
    for path in sorted(index.dir_files(directory)):
        if path != from_path and path.endswith(extension):
            refs += [r for r in index.file_definitions(path, name) if r.symbol.container is None]
    return refs


__all__ = ["Target", "module_files", "lookup_in_files", "resolve_import", "resolve_attribute", "same_package_definitions"]
