"""``livefim telemetry report``: per arm, how often suggestions are accepted and still there later.

Definitions (one suggestion = one ``suggestion_id``; its typed-ahead
continuations are the same suggestion, and an event delivered twice counts once):

- acceptance rate = suggestions with an ``accepted`` event / suggestions ``shown``;
- persistence rate = ``persisted`` checks with ``kept`` / ``persisted`` checks;
- 95% intervals are Wilson score intervals (sane at 0% and 100%, small n);
- each arm is compared with the first arm (the control): the difference of
  rates, its 95% interval (Wald, unpooled) and a two-sided two-proportion
  z-test (pooled); "significant" means p < 0.05.

Worked example: arm a accepts 30 of 100, arm b 45 of 100. Pooled p = 0.375,
z = (0.45 - 0.30) / sqrt(0.375 * 0.625 * (1/100 + 1/100)) = 2.19, p = 0.0285:
significant. ``tests/test_telemetry_report.py`` checks these numbers.
"""

from __future__ import annotations

import html
import math
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from telemetry.events import Event

Z95 = 1.959963984540054


def wilson_interval(successes: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval of a proportion; (0, 1) with no trials.

    >>> [round(x, 4) for x in wilson_interval(30, 100)]
    [0.2189, 0.3958]
    """
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def two_proportion_test(s1: int, n1: int, s2: int, n2: int) -> tuple[float, float]:
    """(z, two-sided p) for H0: both proportions are equal (pooled standard error).

    >>> z, p = two_proportion_test(45, 100, 30, 100)
    >>> round(z, 3), round(p, 4)
    (2.191, 0.0285)
    """
    if n1 == 0 or n2 == 0:
        return 0.0, 1.0
    pooled = (s1 + s2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 0.0, 1.0
    z = (s1 / n1 - s2 / n2) / se
    return z, math.erfc(abs(z) / math.sqrt(2))


def difference_interval(s1: int, n1: int, s2: int, n2: int, z: float = Z95) -> tuple[float, float]:
    """95% Wald interval of p1 - p2 (unpooled)."""
    if n1 == 0 or n2 == 0:
        return -1.0, 1.0
    p1, p2 = s1 / n1, s2 / n2
    se = math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    return p1 - p2 - z * se, p1 - p2 + z * se


@dataclass
class _ArmCounts:
    shown: set[str]
    accepted: set[str]
    partial: set[str]
    accepted_chars: int
    shown_chars_of_accepted: int
    checked: set[str]
    kept: set[str]
    latencies: list[float]


def _counts(events: Iterable[Event], experiment: str | None) -> dict[str, _ArmCounts]:
    arms: dict[str, _ArmCounts] = {}
    shown_chars: dict[str, int] = {}
    for event in events:
        if experiment is not None and event.experiment != experiment:
            continue
        arm = event.arm or "(none)"
        counts = arms.setdefault(arm, _ArmCounts(set(), set(), set(), 0, 0, set(), set(), []))
        if event.kind == "shown":
            if event.suggestion_id not in counts.shown:
                counts.latencies.append(event.latency_ms)
            counts.shown.add(event.suggestion_id)
            shown_chars[event.suggestion_id] = max(shown_chars.get(event.suggestion_id, 0), event.shown_chars)
        elif event.kind == "accepted" and event.suggestion_id not in counts.accepted:
            counts.accepted.add(event.suggestion_id)
            counts.accepted_chars += event.accepted_chars
            total = event.shown_chars or shown_chars.get(event.suggestion_id, 0)
            counts.shown_chars_of_accepted += total
            if 0 < event.accepted_chars < total:
                counts.partial.add(event.suggestion_id)
        elif event.kind == "persisted" and event.suggestion_id not in counts.checked:  # delivery is at least once
            counts.checked.add(event.suggestion_id)
            if event.kept:
                counts.kept.add(event.suggestion_id)
    return arms


def summarize(events: list[Event], experiment: str | None = None) -> dict:
    """The report as data: one entry per arm (control first, in order of first appearance), plus comparisons."""
    arms = _counts(events, experiment)
    out_arms = []
    for name, c in arms.items():
        shown = len(c.shown)
        accepted = len(c.accepted & c.shown) if c.shown else len(c.accepted)
        latencies = sorted(c.latencies)
        out_arms.append({
            "arm": name,
            "shown": shown,
            "accepted": accepted,
            "partially_accepted": len(c.partial),
            "acceptance_rate": round(accepted / shown, 4) if shown else None,
            "acceptance_ci95": [round(x, 4) for x in wilson_interval(accepted, shown)],
            "accepted_share_of_chars": round(c.accepted_chars / c.shown_chars_of_accepted, 4) if c.shown_chars_of_accepted else None,
            "persistence_checked": len(c.checked),
            "persisted": len(c.kept),
            "persistence_rate": round(len(c.kept) / len(c.checked), 4) if c.checked else None,
            "persistence_ci95": [round(x, 4) for x in wilson_interval(len(c.kept), len(c.checked))],
            "latency_ms_p50": round(latencies[len(latencies) // 2], 1) if latencies else None,
        })
    comparisons = []
    if out_arms:
        control = out_arms[0]
        for arm in out_arms[1:]:
            entry = {"arm": arm["arm"], "control": control["arm"]}
            for metric, s, n in (("acceptance", "accepted", "shown"), ("persistence", "persisted", "persistence_checked")):
                z, p = two_proportion_test(arm[s], arm[n], control[s], control[n])
                low, high = difference_interval(arm[s], arm[n], control[s], control[n])
                entry[metric] = {"difference": round(arm[s] / arm[n] - control[s] / control[n], 4) if arm[n] and control[n] else None,
                                 "ci95": [round(low, 4), round(high, 4)], "z": round(z, 3), "p_value": round(p, 4),
                                 "significant": bool(p < 0.05 and arm[n] and control[n])}
            comparisons.append(entry)
    return {"experiment": experiment, "events": len(events), "arms": out_arms, "comparisons": comparisons}


def format_table(summary: dict) -> str:
    """The report for a terminal."""
    title = f"experiment {summary['experiment']}" if summary["experiment"] else "all suggestions"
    lines = [f"{title}: {summary['events']} events", ""]
    lines.append(f"{'arm':<16} {'shown':>7} {'accepted':>9} {'rate':>7} {'95% CI':>17} {'persisted':>10} {'rate':>7} {'95% CI':>17}")
    for arm in summary["arms"]:
        def rate(value: float | None) -> str:
            return "-" if value is None else f"{value:.1%}"

        def ci(pair: list[float]) -> str:
            return f"[{pair[0]:.1%}, {pair[1]:.1%}]"

        lines.append(f"{arm['arm']:<16} {arm['shown']:>7} {arm['accepted']:>9} {rate(arm['acceptance_rate']):>7} "
                     f"{ci(arm['acceptance_ci95']):>17} {arm['persisted']:>4}/{arm['persistence_checked']:<5} "
                     f"{rate(arm['persistence_rate']):>7} {ci(arm['persistence_ci95']):>17}")
    for comparison in summary["comparisons"]:
        lines.append("")
        for metric in ("acceptance", "persistence"):
            m = comparison[metric]
            verdict = "significant" if m["significant"] else "not significant"
            diff = "-" if m["difference"] is None else f"{m['difference']:+.1%}"
            lines.append(f"{comparison['arm']} vs {comparison['control']}, {metric}: {diff} "
                         f"[{m['ci95'][0]:+.1%}, {m['ci95'][1]:+.1%}], p = {m['p_value']:.4f} ({verdict})")
    return "\n".join(lines)


def acceptance_over_time(events: list[Event], experiment: str | None = None, bucket_s: float | None = None) -> dict[str, list[tuple[float, float, int]]]:
    """Per arm: (bucket start, acceptance rate, shown) for each time bucket with suggestions.

    The bucket is an hour when the events span under three days, else a day."""
    relevant = [e for e in events if experiment is None or e.experiment == experiment]
    if not relevant:
        return {}
    span = relevant[-1].time - relevant[0].time
    bucket_s = bucket_s or (3600.0 if span < 3 * 86400 else 86400.0)
    shown: dict[str, dict[str, float]] = defaultdict(dict)  # arm -> id -> time shown
    accepted: dict[str, set[str]] = defaultdict(set)
    for e in relevant:
        arm = e.arm or "(none)"
        if e.kind == "shown":
            shown[arm].setdefault(e.suggestion_id, e.time)
        elif e.kind == "accepted":
            accepted[arm].add(e.suggestion_id)
    series = {}
    for arm, times in shown.items():
        buckets: dict[float, list[int]] = defaultdict(lambda: [0, 0])
        for sid, t in times.items():
            start = math.floor(t / bucket_s) * bucket_s
            buckets[start][0] += 1
            buckets[start][1] += sid in accepted[arm]
        series[arm] = [(start, hits / count, count) for start, (count, hits) in sorted(buckets.items())]
    return series


PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf")


def write_plot(events: list[Event], path: str | Path, experiment: str | None = None) -> Path:
    """An HTML page with an SVG line chart of acceptance rate over time, one line per arm (no dependencies)."""
    series = acceptance_over_time(events, experiment)
    width, height, pad = 720, 320, 48
    times = [t for points in series.values() for t, _, _ in points]
    t0, t1 = (min(times), max(times)) if times else (0.0, 1.0)
    t1 = t1 if t1 > t0 else t0 + 1

    def x(t: float) -> float:
        return pad + (t - t0) / (t1 - t0) * (width - 2 * pad)

    def y(rate: float) -> float:
        return height - pad - rate * (height - 2 * pad)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
             f'<rect width="{width}" height="{height}" fill="white"/>']
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        parts.append(f'<line x1="{pad}" x2="{width - pad}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{pad - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{tick:.0%}</text>')
    for label_t in (t0, t1):
        label = time.strftime("%Y-%m-%d %H:%M", time.gmtime(label_t))
        parts.append(f'<text x="{x(label_t):.1f}" y="{height - pad + 18}" text-anchor="middle">{label} UTC</text>')
    for i, (arm, points) in enumerate(sorted(series.items())):
        colour = PALETTE[i % len(PALETTE)]
        coords = " ".join(f"{x(t):.1f},{y(rate):.1f}" for t, rate, _ in points)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{coords}"/>')
        for t, rate, count in points:
            parts.append(f'<circle cx="{x(t):.1f}" cy="{y(rate):.1f}" r="3" fill="{colour}"><title>{html.escape(arm)}: '
                         f'{rate:.1%} of {count}</title></circle>')
        parts.append(f'<text x="{width - pad + 4}" y="{pad + 16 * i}" fill="{colour}">{html.escape(arm)}</text>')
    parts.append("</svg>")
    title = html.escape(f"livefim acceptance over time{f' — {experiment}' if experiment else ''}")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head>"
            f"<body><h1 style='font-family:sans-serif;font-size:16px'>{title}</h1>{''.join(parts)}</body></html>\n")
    out = Path(path)
    out.write_text(page, encoding="utf-8")
    return out


__all__ = ["acceptance_over_time", "difference_interval", "format_table", "summarize", "two_proportion_test",
           "wilson_interval", "write_plot"]
