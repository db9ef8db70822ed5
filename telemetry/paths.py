"""Where telemetry lives on this machine, and the anonymous id experiments assign arms by."""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def home() -> Path:
    return Path(os.environ.get("LIVEFIM_HOME") or Path.home() / ".cache" / "livefim")


def default_database() -> Path:
    return home() / "telemetry.db"


def default_experiments_file() -> Path:
    return home() / "experiments.toml"


def local_user_id() -> str:
    """A random id made once per machine (``$LIVEFIM_HOME/user-id``): stable across sessions, says nothing about the user."""
    path = home() / "user-id"
    try:
        existing = path.read_text(encoding="utf-8").strip()
        if existing:
            return existing
    except OSError:
        pass
    made = uuid.uuid4().hex
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(made + "\n", encoding="utf-8")
    except OSError:
        pass  # a read-only home: this session's id is still stable for the session
    return made
