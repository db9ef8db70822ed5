"""Regenerate (or check) the Python code for engine/proto/livefim/v1/engine.proto.

Why committed code with a check: the generated modules are imported at run time
without needing protoc, and ``--check`` (run by tests) catches a .proto edited
without regenerating. The proto is compiled with the repository root as its
include path, so generated imports read ``from engine.proto.livefim.v1 import
...`` (the top-level ``livefim`` package is the CLI) while the proto package,
and so the service's full name, stays ``livefim.v1.CompletionEngine``.

Usage::

    python -m engine.proto.generate          # rewrite the committed files
    python -m engine.proto.generate --check  # exit 1 if they are out of date
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ["engine/proto/livefim/v1/engine.proto"]
OUTPUTS = [
    "engine/proto/livefim/v1/engine_pb2.py",
    "engine/proto/livefim/v1/engine_pb2.pyi",
    "engine/proto/livefim/v1/engine_pb2_grpc.py",
]


def generate_into(out_dir: Path) -> None:
    """Run grpc_tools.protoc from the repository root, writing under ``out_dir``."""
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        "-I.",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *PROTOS,
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"protoc failed ({result.returncode}): {result.stderr.strip()}")


def stale_files() -> list[str]:
    """Committed outputs that differ from a fresh generation (empty when current)."""
    with tempfile.TemporaryDirectory() as tmp:
        generate_into(Path(tmp))
        return [
            path
            for path in OUTPUTS
            if not (ROOT / path).exists() or not filecmp.cmp(Path(tmp) / path, ROOT / path, shallow=False)
        ]


def regenerate() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        generate_into(Path(tmp))
        for path in OUTPUTS:
            shutil.copyfile(Path(tmp) / path, ROOT / path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed files are out of date")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        if stale:
            print(f"out of date (run python -m engine.proto.generate): {', '.join(stale)}", file=sys.stderr)
            return 1
        return 0
    regenerate()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
