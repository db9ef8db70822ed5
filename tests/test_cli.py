"""The ``livefim`` command as a user runs it (subprocess)."""

import json
import subprocess
import sys

import pytest

LIVEFIM = [sys.executable, "-m", "livefim.cli"]


def test_models_list_shows_both_models_and_the_default():
    out = subprocess.run(LIVEFIM + ["models", "list"], capture_output=True, text=True, check=True).stdout
    assert "* qwen2.5-coder-0.5b" in out and "qwen2.5-coder-1.5b" in out


def test_unknown_model_install_is_a_clear_error():
    result = subprocess.run(LIVEFIM + ["models", "install", "gpt-17"], capture_output=True, text=True)
    assert result.returncode == 1 and "unknown model 'gpt-17'" in result.stderr


def test_complete_rejects_a_position_outside_the_file(tmp_path):
    source = tmp_path / "a.py"
    source.write_text("x = 1\n")
    result = subprocess.run(LIVEFIM + ["complete", str(source), "--line", "9", "--column", "1"], capture_output=True, text=True)
    assert result.returncode == 2 and "past the end of the document" in result.stderr


@pytest.mark.real_model
def test_complete_prints_real_code_as_json(tmp_path):
    source = tmp_path / "shapes.py"
    source.write_text("def rectangle_area(width, height):\n    return \n")
    result = subprocess.run(
        LIVEFIM + ["complete", str(source), "--line", "2", "--column", "12", "--json"],
        capture_output=True, text=True, check=True,
    )
    answer = json.loads(result.stdout)
    assert "width * height" in answer["text"] or "height * width" in answer["text"]
    assert answer["tokens"] > 0 and answer["timings"]["prefill_ms"] > 0
