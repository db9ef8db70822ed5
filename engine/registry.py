"""The model registry: model facts live in ``models.toml``, not in code.

Why: adding a model (or a new chunk-wheel release) must be a data change that
every part of the engine picks up — installer, prompt builder, stop rules.

Example::

    >>> spec = load_registry().model("qwen2.5-coder-0.5b")
    >>> spec.family.fim_template.format(prefix="a", suffix="b")
    '<|fim_prefix|>a<|fim_suffix|>b<|fim_middle|>'
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

REGISTRY_PATH = Path(__file__).with_name("models.toml")


class UnknownModelError(KeyError):
    """Raised for a model name the registry does not list."""

    def __str__(self) -> str:  # KeyError quotes its message; we want prose.
        return str(self.args[0])


@dataclass(frozen=True)
class ChunkWheel:
    package: str
    sha256: str


@dataclass(frozen=True)
class ModelFamily:
    name: str
    fim_template: str
    fim_prefix_token: str
    fim_suffix_token: str
    fim_middle_token: str
    file_header_template: str
    repo_header_template: str
    stop_token_ids: tuple[int, ...]
    rope_theta: float
    rope_convention: str
    vocab_size: int


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    family: ModelFamily
    gguf_file: str
    gguf_sha256: str
    version: str
    wheels: tuple[ChunkWheel, ...]

    def requirement(self, wheel: ChunkWheel) -> str:
        """The pip requirement line that pins one chunk wheel by version and hash."""
        return f"{wheel.package}=={self.version} --hash=sha256:{wheel.sha256}"


@dataclass(frozen=True)
class Registry:
    default: str
    models: dict[str, ModelSpec]

    def model(self, name: str | None = None) -> ModelSpec:
        key = name or self.default
        if key not in self.models:
            known = ", ".join(sorted(self.models))
            raise UnknownModelError(f"unknown model {key!r}; known models: {known}")
        return self.models[key]


@cache
def load_registry(path: Path = REGISTRY_PATH) -> Registry:
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    families = {
        name: ModelFamily(
            name=name,
            fim_template=fam["fim_template"],
            fim_prefix_token=fam["fim_prefix_token"],
            fim_suffix_token=fam["fim_suffix_token"],
            fim_middle_token=fam["fim_middle_token"],
            file_header_template=fam["file_header_template"],
            repo_header_template=fam["repo_header_template"],
            stop_token_ids=tuple(fam["stop_token_ids"]),
            rope_theta=float(fam["rope_theta"]),
            rope_convention=fam["rope_convention"],
            vocab_size=int(fam["vocab_size"]),
        )
        for name, fam in raw["family"].items()
    }
    models = {
        name: ModelSpec(
            name=name,
            description=m["description"],
            family=families[m["family"]],
            gguf_file=m["gguf_file"],
            gguf_sha256=m["gguf_sha256"],
            version=m["version"],
            wheels=tuple(ChunkWheel(w["package"], w["sha256"]) for w in m["wheels"]),
        )
        for name, m in raw["models"].items()
    }
    assert raw["default"] in models, raw["default"]
    for family in families.values():
        # the session path assumes the template is exactly prefix-marker, prefix, suffix-marker, suffix, middle-marker
        expected = f"{family.fim_prefix_token}{{prefix}}{family.fim_suffix_token}{{suffix}}{family.fim_middle_token}"
        assert family.fim_template == expected, (family.name, family.fim_template)
    return Registry(default=raw["default"], models=models)
