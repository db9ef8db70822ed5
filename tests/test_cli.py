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


def test_unknown_model_in_any_command_is_one_line_naming_the_known_models():
    result = subprocess.run(LIVEFIM + ["bench", "model", "--models", "gpt-17", "--contexts", "64"], capture_output=True, text=True)
    assert result.returncode == 1 and "unknown model 'gpt-17'" in result.stderr and "qwen2.5-coder-0.5b" in result.stderr
    assert "Traceback" not in result.stderr


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


def test_bench_kernels_times_every_variant_this_cpu_runs_side_by_side():
    from kernels import cpu_attention, cpu_int8

    result = subprocess.run(LIVEFIM + ["bench", "kernels", "--rows", "1,3", "--contexts", "40", "--query-rows", "1,3",
                                       "--repeats", "2"], capture_output=True, text=True, check=True)
    report = json.loads(result.stdout)
    assert report["bench"] == "kernels" and report["cpu"]
    expected = {f"{isa}_ms" for isa in cpu_int8.available_isas()} | {"w8a8_avx2_ms"} | ({"vnni_ms"} if cpu_int8.vnni_available() else set())
    assert [entry["rows"] for entry in report["linear"]] == ([1, 3] if cpu_int8.kernel_available() else [])
    for entry in report["linear"]:
        wanted = expected | ({"amx_ms"} if cpu_int8.amx_available() and entry["rows"] > 1 else set())
        wanted |= {key.replace("_ms", "_dram_ms") for key in wanted if key in ("w8a8_avx2_ms", "vnni_ms", "amx_ms")}
        assert wanted <= set(entry) and all(entry[key] > 0 for key in wanted)
    assert [(entry["keys"], entry["rows"]) for entry in report["attention"]] == [(40, 1), (40, 3)]
    for entry in report["attention"]:
        variants = {f"kernel_{isa}_ms" for isa in cpu_attention.available_isas()} if cpu_attention.available() else set()
        assert entry["sdpa_folded_ms"] > 0 and variants == {key for key in entry if key.startswith("kernel_")}
        assert all(entry[key] > 0 for key in variants)
