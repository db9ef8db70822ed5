"""Compile a kernel's C source once with the system compiler and cache the shared library by hash.

Why: the CPU kernels (``int8_linear.c``, ``cpu_attention.c``) are plain C with
intrinsics; building them on the user's machine takes a second or two and needs
nothing but ``cc``, where a wheel per ISA would need a build farm. The library
lands in ``~/.cache/livefim/kernels`` (or ``$LIVEFIM_HOME/kernels``) under a
name that hashes the source, the local headers it includes (``#include "amx_tiles.h"``) and the
flags, so an edited source or header never loads a stale build.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

CFLAGS = ("-O3", "-mavx2", "-mfma", "-mf16c", "-fopenmp", "-shared", "-fPIC")
LIBS = ("-lm",)
_LOCAL_INCLUDE = re.compile(rb'^\s*#\s*include\s+"([^"]+)"', re.MULTILINE)


def cache_dir() -> Path:
    """Where built kernels live."""
    return Path(os.environ.get("LIVEFIM_HOME") or Path.home() / ".cache" / "livefim") / "kernels"


def _build(source: Path, target: Path, cflags: tuple[str, ...], libs: tuple[str, ...]) -> None:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("no C compiler (cc/gcc) on PATH")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        built = Path(scratch) / target.name
        result = subprocess.run([compiler, *cflags, "-o", str(built), str(source), *libs], capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{compiler} failed on {source.name}: {result.stderr.strip()[-2000:]}")
        os.replace(built, target)  # atomic: a concurrent builder never loads a half-written file


def load_c_library(source: Path, cflags: tuple[str, ...] = CFLAGS, libs: tuple[str, ...] = LIBS) -> ctypes.CDLL:
    """``source`` built (first use only) and loaded; raises ``RuntimeError`` or ``OSError`` when it cannot be."""
    text = source.read_bytes()
    headers = b"".join((source.parent / name.decode()).read_bytes() for name in _LOCAL_INCLUDE.findall(text))
    digest = hashlib.sha256(text + headers + " ".join(cflags).encode()).hexdigest()[:16]
    target = cache_dir() / f"{source.stem}-{digest}.so"
    if not target.is_file():
        _build(source, target, cflags, libs)
    return ctypes.CDLL(str(target))  # its libgomp.so.1 is torch's, already loaded


__all__ = ["CFLAGS", "LIBS", "cache_dir", "load_c_library"]
