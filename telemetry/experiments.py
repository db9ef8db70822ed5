"""A/B experiments declared in a TOML file; users are assigned to arms by a stable hash.

Why a hash of (experiment, user): the same user always lands in the same arm,
across restarts and machines that share the id, without any server keeping
assignments; different experiments split users independently.

File format (``livefim lsp --experiments FILE``; default ``$LIVEFIM_HOME/experiments.toml``)::

    [[experiment]]
    name = "cache-mode"
    [[experiment.arm]]
    name = "pie"
    weight = 1
    options = { cache_mode = "pie" }
    [[experiment.arm]]
    name = "recompute"
    weight = 1
    options = { cache_mode = "recompute" }

``options`` are completion options the arm sets (the names of
``engine.types.CompletionOptions`` that ``ARM_OPTIONS`` lists). Only the first
experiment whose ``enabled`` is not false is live: one arm decides each request.

Example::

    >>> exp = Experiment("x", (Arm("a", 1.0, {}), Arm("b", 3.0, {})))
    >>> exp.assign("user-1").name == exp.assign("user-1").name
    True
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# option -> accepted Python type(s); what an arm may change about a completion
ARM_OPTIONS: dict[str, tuple[type, ...]] = {
    "cache_mode": (str,),
    "speculation": (str,),
    "retrieval": (bool,),
    "max_tokens": (int,),
    "max_lines": (int,),
    "temperature": (int, float),
    "suggestions": (int,),
}


class ExperimentError(ValueError):
    """The experiments file is malformed; the message says where."""


@dataclass(frozen=True)
class Arm:
    name: str
    weight: float
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Experiment:
    name: str
    arms: tuple[Arm, ...]

    def assign(self, user: str) -> Arm:
        """The user's arm: a point in [0, 1) from sha256(experiment/user), placed on the arms' weights."""
        digest = hashlib.sha256(f"{self.name}/{user}".encode("utf-8")).digest()
        point = int.from_bytes(digest[:8], "big") / 2**64
        total = sum(arm.weight for arm in self.arms)
        edge = 0.0
        for arm in self.arms:
            edge += arm.weight / total
            if point < edge:
                return arm
        return self.arms[-1]


def parse_experiments(data: dict[str, Any], where: str = "experiments") -> list[Experiment]:
    experiments = []
    for i, raw in enumerate(data.get("experiment", [])):
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            raise ExperimentError(f"{where}: experiment {i + 1} needs a name")
        if raw.get("enabled", True) is False:
            continue
        arms = []
        for j, arm in enumerate(raw.get("arm", [])):
            arm_name = arm.get("name")
            if not isinstance(arm_name, str) or not arm_name:
                raise ExperimentError(f"{where}: experiment {name!r} arm {j + 1} needs a name")
            weight = arm.get("weight", 1)
            if not isinstance(weight, (int, float)) or weight <= 0:
                raise ExperimentError(f"{where}: experiment {name!r} arm {arm_name!r}: weight must be > 0, got {weight!r}")
            options = arm.get("options", {})
            for key, value in options.items():
                if key not in ARM_OPTIONS:
                    raise ExperimentError(f"{where}: experiment {name!r} arm {arm_name!r}: unknown option {key!r} "
                                          f"(one of {', '.join(ARM_OPTIONS)})")
                if not isinstance(value, ARM_OPTIONS[key]) or (isinstance(value, bool) and bool not in ARM_OPTIONS[key]):
                    raise ExperimentError(f"{where}: experiment {name!r} arm {arm_name!r}: {key} = {value!r} has the wrong type")
            arms.append(Arm(arm_name, float(weight), dict(options)))
        if len(arms) < 2:
            raise ExperimentError(f"{where}: experiment {name!r} needs at least two arms")
        if len({a.name for a in arms}) != len(arms):
            raise ExperimentError(f"{where}: experiment {name!r} has two arms with one name")
        experiments.append(Experiment(name, tuple(arms)))
    return experiments


def load_experiments(path: str | Path) -> list[Experiment]:
    """The enabled experiments of a TOML file; a missing file means none. Raises ExperimentError."""
    path = Path(path)
    if not path.is_file():
        return []
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as error:
        raise ExperimentError(f"{path}: {error}") from error
    return parse_experiments(data, str(path))


__all__ = ["ARM_OPTIONS", "Arm", "Experiment", "ExperimentError", "load_experiments", "parse_experiments"]
