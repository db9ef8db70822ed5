"""The kernel builder rebuilds when a source or a local header it includes changes."""

from __future__ import annotations

import ctypes
from pathlib import Path

import pytest

from kernels.cbuild import load_c_library


def test_an_edited_header_rebuilds_the_library(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVEFIM_HOME", str(tmp_path / "home"))
    (tmp_path / "answer.h").write_text("#define ANSWER 41\n")
    source = tmp_path / "answer.c"
    source.write_text('#include "answer.h"\nint answer(void) { return ANSWER; }\n')
    flags = ("-O1", "-shared", "-fPIC")

    def answer() -> int:
        library = load_c_library(source, flags, ())
        library.answer.restype = ctypes.c_int
        return library.answer()

    assert answer() == 41
    (tmp_path / "answer.h").write_text("#define ANSWER 42\n")
    assert answer() == 42  # a stale build would still say 41
    assert len(list((tmp_path / "home" / "kernels").glob("answer-*.so"))) == 2
