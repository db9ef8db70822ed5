"""Shared fixtures: the real tokenizer, a tiny random Qwen2, and the real 0.5B.

The tiny model has the real vocabulary (so real prompts and stop ids work) but
2 layers of width 64: fast, deterministic under a seed, and meaningless output.
The real model and tokenizer are installed into ~/.cache/livefim on first use
(CI installs them once, then every run reuses the cache).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "ACTIVE")

import pytest
import torch

from engine.install import install, model_dir
from engine.registry import load_registry
from engine.runtime import LoadedModel, build_tiny_random_model, load_model

REAL_MODEL = "qwen2.5-coder-0.5b"


@pytest.fixture(scope="session")
def tokenizer():
    from transformers import AutoTokenizer

    install(REAL_MODEL)
    return AutoTokenizer.from_pretrained(model_dir(REAL_MODEL))


def make_tiny_model(tokenizer, seed: int = 0) -> LoadedModel:
    """A random 2-layer Qwen2 with the real tokenizer's vocabulary (built in engine/runtime.py)."""
    return build_tiny_random_model(tokenizer, seed, load_registry().model(REAL_MODEL).family)


@pytest.fixture(scope="session")
def tiny_model(tokenizer) -> LoadedModel:
    return make_tiny_model(tokenizer)


@pytest.fixture(scope="session")
def real_model() -> LoadedModel:
    return load_model(REAL_MODEL, "cpu", install_missing=True)
