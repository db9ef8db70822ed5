"""What a forward pass of n rows costs on this machine, next to a one-token step.

Why: speculation pays when the rows a draft adds to a pass cost less than the
tokens they are expected to bring, and that price differs by machine and by
cache length. The AVX2 int8 kernel sweeps up to 4 rows for a step's price and
then charges about a quarter of a step a row; AMX charges about 5% a row; and
on every CPU the attention reads each cached key once per row, so the same 9
rows cost more at 4k keys than at 1k. Measured once per machine and model (a
few seconds), kept under ``$LIVEFIM_HOME/pass_costs``, and read by the lookup
drafter to pick how many tokens to draft (``engine.speculate.best_draft_length``).

The cache a measurement runs on is made of random keys and values: a pass's
price depends on the cache's length, not on what it holds, and this way no
prompt has to be encoded first.

Example: relative prices of 1, 2, ... rows at 1,500 cached keys::

    >>> costs = PassCosts(keys=(256, 2048), seconds=((0.05, 0.05, 0.06), (0.06, 0.07, 0.09)))
    >>> [round(c, 2) for c in costs.relative(1500)]
    [1.0, 1.12, 1.42]
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from cache import kv
from engine.install import cache_root

log = logging.getLogger(__name__)

MOST_ROWS = 9  # 1 token + 8 drafted: the longest pass the lookup drafter makes
CALIBRATION_KEYS = (256, 2048)  # cache lengths measured; others lie on the line through them


@dataclass(frozen=True)
class PassCosts:
    """Seconds of a pass by rows (1, 2, ...) at each of ``keys`` cached rows."""

    keys: tuple[int, ...]
    seconds: tuple[tuple[float, ...], ...]  # seconds[i][rows - 1] at keys[i]

    @property
    def most_rows(self) -> int:
        return min(len(row) for row in self.seconds)

    def at(self, keys: int) -> tuple[float, ...]:
        """Seconds by rows at ``keys`` cached rows: on the line through the two nearest measurements (never
        below the shortest cache's price), made non-decreasing in rows so that noise never makes more rows
        look cheaper than fewer."""
        points = sorted(zip(self.keys, (row[: self.most_rows] for row in self.seconds)))
        if len(points) == 1:
            line = list(points[0][1])
        else:
            segment = max(0, min(len(points) - 2, sum(1 for k, _ in points if k <= keys) - 1))
            (low_keys, low), (high_keys, high) = points[segment], points[segment + 1]
            share = (keys - low_keys) / (high_keys - low_keys)
            line = [max(floor, a + share * (b - a)) for floor, a, b in zip(points[0][1], low, high)]
        for r in range(1, len(line)):
            line[r] = max(line[r], line[r - 1])
        return tuple(line)

    def relative(self, keys: int) -> tuple[float, ...]:
        """Price by rows at ``keys`` cached rows, a one-token step = 1."""
        line = self.at(keys)
        return tuple(s / line[0] for s in line)

    def to_json(self) -> dict[str, Any]:
        return {"keys": list(self.keys), "seconds": [list(row) for row in self.seconds]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "PassCosts":
        keys = tuple(int(k) for k in data["keys"])
        seconds = tuple(tuple(float(s) for s in row) for row in data["seconds"])
        if not keys or len(keys) != len(seconds) or any(not row or min(row) <= 0 for row in seconds):
            raise ValueError("malformed pass costs")
        return cls(keys, seconds)


def flat_costs(most_rows: int = MOST_ROWS, per_row: float = 0.0) -> PassCosts:
    """A price list for when nothing was measured: each row past the first costs ``per_row`` of a step
    (0: extra rows are free, so the drafter drafts all it has)."""
    return PassCosts((0,), (tuple(1.0 + per_row * r for r in range(most_rows)),))


@torch.inference_mode()
def measure_pass_costs(model: Any, *, keys: tuple[int, ...] = CALIBRATION_KEYS, most_rows: int = MOST_ROWS,
                       repeats: int = 3) -> PassCosts:
    """Time passes of 1..``most_rows`` rows on caches of ``keys`` random rows: the median of ``repeats``,
    row counts interleaved so that a slow moment spreads over all of them."""
    config = model.config
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    layers = config.num_hidden_layers
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    generator = torch.Generator().manual_seed(0)
    synchronize: Callable[[], None] = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    ids = torch.randint(0, config.vocab_size, (1, most_rows), generator=generator).to(device)
    measured = []
    for count in keys:
        saved = [tuple(torch.randn((1, heads, count, head_dim), generator=generator).to(device=device, dtype=dtype)
                       for _ in range(2)) for _ in range(layers)]
        cache = kv.from_snapshot(config, saved)
        kv.reserve(cache, most_rows + 1)
        samples: dict[int, list[float]] = {rows: [] for rows in range(1, most_rows + 1)}
        for attempt in range(repeats + 1):
            for rows in samples:
                kv.crop_to(cache, count)
                synchronize()
                started = time.perf_counter()
                model(input_ids=ids[:, :rows], past_key_values=cache, use_cache=True, logits_to_keep=rows)
                synchronize()
                if attempt:  # the first round builds kernels and warms caches
                    samples[rows].append(time.perf_counter() - started)
        measured.append(tuple(statistics.median(samples[rows]) for rows in samples))
    return PassCosts(tuple(keys), tuple(measured))


def _machine_key(loaded: Any) -> str:
    """What a measurement depends on: the model and how it runs, the CPU (or GPU), torch and the kernels."""
    from kernels.cpu_attention import default_isa
    from kernels.cpu_int8 import cpu_model_name, int8_activation_isa

    device = loaded.device
    if device.type == "cuda":
        hardware = torch.cuda.get_device_name(device)
    else:
        cpu = cpu_model_name() or platform.processor() or "cpu"
        hardware = cpu + f"|threads {torch.get_num_threads()}|{int8_activation_isa(9)}|{default_isa()}"
    config = loaded.model.config
    shape = [getattr(config, name, None) for name in ("hidden_size", "intermediate_size", "num_hidden_layers", "vocab_size")]
    facts = [loaded.name, str(shape), loaded.cpu_linear, device.type, hardware, torch.__version__, platform.machine(),
             os.environ.get("LIVEFIM_CPU_ATTENTION", "")]
    return hashlib.sha256("\n".join(facts).encode()).hexdigest()[:16]


def costs_dir() -> Path:
    """Where measured prices are kept: ``$LIVEFIM_HOME/pass_costs`` (``~/.cache/livefim`` by default)."""
    return cache_root() / "pass_costs"


def _stderr_progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def pass_costs_for(loaded: Any, *, measure: Callable[[Any], PassCosts] | None = None,
                   progress: Callable[[str], None] = _stderr_progress) -> PassCosts:
    """This machine's price list for ``loaded`` (an ``engine.runtime.LoadedModel``): read from
    ``costs_dir()`` when measured before, else measured now (5-20 s on a 2-core CPU, reported to
    ``progress``) and kept there."""
    path = costs_dir() / f"{loaded.name}-{_machine_key(loaded)}.json"
    try:
        return PassCosts.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError) as error:
        log.warning("ignoring unreadable pass costs %s (%s): measuring again", path, error)
    progress(f"{loaded.name}: measuring what passes of 1-{MOST_ROWS} rows cost on this machine (once per model and machine)")
    started = time.perf_counter()
    costs = (measure or (lambda loaded: measure_pass_costs(loaded.model)))(loaded)
    prices = "; ".join(f"{k} keys " + " ".join(f"{s / row[0]:.2f}" for s in row) for k, row in zip(costs.keys, costs.seconds))
    progress(f"{loaded.name}: measured in {time.perf_counter() - started:.1f} s (price by rows, a step = 1: {prices})")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        scratch = path.with_suffix(f".{os.getpid()}.tmp")
        scratch.write_text(json.dumps(costs.to_json()))
        os.replace(scratch, path)
    except OSError as error:
        log.warning("could not keep pass costs at %s: %s", path, error)
    return costs


__all__ = ["CALIBRATION_KEYS", "MOST_ROWS", "PassCosts", "costs_dir", "flat_costs", "measure_pass_costs", "pass_costs_for"]
