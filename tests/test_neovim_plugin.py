"""A real headless Neovim (Debian's 0.7.2) with editor-plugins/neovim: open a file, type, get a suggestion,
accept it with <Tab>; the buffer afterwards must be the typed text with the suggestion inserted at the cursor."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = ROOT / "editor-plugins" / "neovim"
SCRIPT = Path(__file__).resolve().parent / "nvim" / "accept.lua"

pytestmark = pytest.mark.skipif(shutil.which("nvim") is None, reason="needs Neovim (apt-get install neovim; .ci/run installs it)")


def run_neovim(tmp_path: Path, text: str, typed: str, env_extra: dict[str, str], timeout: float = 300) -> dict:
    source = tmp_path / "add.py"
    source.write_text(text)
    out = tmp_path / "out.json"
    env = {key: value for key, value in os.environ.items() if key not in ("LIVEFIM_TINY_MODEL", "LIVEFIM_MODEL")}
    env.update(env_extra)
    env.update(
        LIVEFIM_NVIM_CMD=json.dumps([sys.executable, "-m", "livefim.cli", "lsp"]),
        LIVEFIM_NVIM_SETTINGS=json.dumps({"debounceMs": 0, "telemetry": {"enabled": False}}),
        LIVEFIM_NVIM_FILE=str(source), LIVEFIM_NVIM_TYPE=typed, LIVEFIM_NVIM_OUT=str(out),
        OMP_WAIT_POLICY="ACTIVE", HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "config"),
        XDG_DATA_HOME=str(tmp_path / "data"), XDG_STATE_HOME=str(tmp_path / "state"),
        LIVEFIM_HOME=os.environ.get("LIVEFIM_HOME") or str(Path.home() / ".cache" / "livefim"),
    )
    command = ["nvim", "--headless", "-u", "NONE", "-i", "NONE", "--cmd", f"set rtp^={PLUGIN}", "-c", f"luafile {SCRIPT}"]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.is_file(), f"nvim wrote nothing (exit {done.returncode}): {done.stderr[-2000:]}"
    result = json.loads(out.read_text())
    assert "error" not in result, result
    return result


def expected_after(typed_lines: list[str], cursor: list[int], suggestion: str) -> list[str]:
    """Insert ``suggestion`` into ``typed_lines`` at the 1-based row / 0-based byte column ``cursor``."""
    row, col = cursor[0] - 1, cursor[1]
    line = typed_lines[row].encode("utf-8")
    merged = line[:col].decode("utf-8") + suggestion + line[col:].decode("utf-8")
    return typed_lines[:row] + merged.split("\n") + typed_lines[row + 1:]


def test_neovim_shows_and_accepts_a_suggestion_tiny_model(tmp_path: Path):
    result = run_neovim(tmp_path, "def add(a, b):\n\n", "    return ", {"LIVEFIM_TINY_MODEL": "1"}, timeout=120)
    assert result["typed"] == ["def add(a, b):", "    return "]  # the file's last newline ends line 2
    assert result["suggestion"] and result["extmarks"] == 1  # drawn as virtual text
    assert result["after"] == expected_after(result["typed"], result["cursor"], result["suggestion"])
    assert result["shown_after_accept"] is False


@pytest.mark.real_model
def test_neovim_completes_the_return_of_add_with_the_real_model(tmp_path: Path):
    result = run_neovim(tmp_path, "def add(a, b):\n\n", "    return ", {})
    assert "a + b" in result["suggestion"], result
    assert result["after"] == expected_after(result["typed"], result["cursor"], result["suggestion"])
    assert result["after"][1].startswith("    return a + b")
