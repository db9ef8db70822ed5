"""The committed generated code matches engine.proto (regenerate with `python -m engine.proto.generate`)."""

from __future__ import annotations

from engine.proto import generate
from engine.proto.livefim.v1 import engine_pb2


def test_generated_code_is_current() -> None:
    assert generate.stale_files() == []
    assert generate.main(["--check"]) == 0


def test_service_full_name_is_versioned() -> None:
    # The proto package stays livefim.v1 even though the Python modules live under engine.proto.
    assert engine_pb2.DESCRIPTOR.services_by_name["CompletionEngine"].full_name == "livefim.v1.CompletionEngine"
