"""The user's settings for the language server, from the editor (``workspace/configuration``, section ``livefim``).

Why one dataclass: settings arrive from three places (command line,
``initializationOptions``, the editor's configuration, which may change at any
time) and each consumer (debounce, requests, telemetry, engine link) reads the
merged result. A bad value is reported and ignored, never fatal.

Keys (camelCase, as editors write them)::

    {
      "engine": "host:port",            # a running `livefim serve`; "" = embedded engine
      "model": "qwen2.5-coder-0.5b",    # the embedded engine's model
      "maxLines": 12,                   # longest multi-line suggestion
      "debounceMs": null,               # null = adaptive to the typing cadence, else a fixed wait
      "telemetry": {"enabled": true, "shareCode": false, "persistenceDelaySeconds": 30,
                    "store": null},             # null = sqlite in $LIVEFIM_HOME, or "redis://host:6379/0"
      "experimentsFile": null,          # default $LIVEFIM_HOME/experiments.toml
      "userId": null                    # default: a random id made once on this machine
    }

Example::

    >>> s, problems = Settings().merged({"maxLines": 3, "telemetry": {"enabled": False}, "debounceMs": -5})
    >>> s.max_lines, s.telemetry_enabled, s.debounce_ms, problems
    (3, False, None, ['debounceMs must be a number from 0 to 5000 (or null for adaptive), got -5'])
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

SECTION = "livefim"


@dataclass(frozen=True)
class Settings:
    engine: str | None = None
    model: str | None = None
    max_lines: int = 12
    debounce_ms: float | None = None  # None: adaptive (lsp/debounce.py)
    telemetry_enabled: bool = True
    share_code: bool = False
    persistence_delay_s: float = 30.0
    telemetry_store: str | None = None  # None: $LIVEFIM_HOME/telemetry.db; "redis://...": a Redis stream
    experiments_file: str | None = None
    user_id: str | None = None

    def merged(self, raw: dict[str, Any] | None) -> tuple[Settings, list[str]]:
        """These settings with the editor's ``raw`` values applied; (new settings, problems found)."""
        if not isinstance(raw, dict):
            return self, [] if raw is None else [f"settings must be an object, got {type(raw).__name__}"]
        out, problems = self, []

        def take(key: str, field: str, check, message: str) -> None:  # noqa: ANN001
            nonlocal out
            if key not in raw:
                return
            value = raw[key]
            if check(value):
                out = replace(out, **{field: value})
            else:
                problems.append(f"{message}, got {value!r}")

        take("engine", "engine", lambda v: v is None or isinstance(v, str), "engine must be a host:port string")
        take("model", "model", lambda v: v is None or (isinstance(v, str) and v), "model must be a model name")
        take("maxLines", "max_lines", lambda v: isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 200,
             "maxLines must be an integer from 1 to 200")
        take("debounceMs", "debounce_ms", lambda v: v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 5000),
             "debounceMs must be a number from 0 to 5000 (or null for adaptive)")
        take("experimentsFile", "experiments_file", lambda v: v is None or isinstance(v, str), "experimentsFile must be a path")
        take("userId", "user_id", lambda v: v is None or (isinstance(v, str) and v), "userId must be a non-empty string")
        telemetry = raw.get("telemetry")
        if telemetry is not None:
            if not isinstance(telemetry, dict):
                problems.append(f"telemetry must be an object, got {telemetry!r}")
            else:
                sub, sub_problems = out._merged_telemetry(telemetry)
                out = sub
                problems += sub_problems
        if out.engine == "":
            out = replace(out, engine=None)
        return out, problems

    def _merged_telemetry(self, raw: dict[str, Any]) -> tuple[Settings, list[str]]:
        out, problems = self, []
        for key, field, check, message in (
            ("enabled", "telemetry_enabled", lambda v: isinstance(v, bool), "telemetry.enabled must be true or false"),
            ("shareCode", "share_code", lambda v: isinstance(v, bool), "telemetry.shareCode must be true or false"),
            ("persistenceDelaySeconds", "persistence_delay_s",
             lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 86400,
             "telemetry.persistenceDelaySeconds must be a number of seconds (0, 86400]"),
            ("store", "telemetry_store", lambda v: v is None or (isinstance(v, str) and v),
             "telemetry.store must be a sqlite path or a redis:// URL"),
        ):
            if key in raw:
                if check(raw[key]):
                    out = replace(out, **{field: raw[key]})
                else:
                    problems.append(f"{message}, got {raw[key]!r}")
        return out, problems


__all__ = ["SECTION", "Settings"]
