"""Per-minute buckets (`shared.metrics`) into what people read: rows in a sensible order,
totals, rates, ratios, histogram quantiles, and windows downsampled for charts.

Pure functions over `{minute start: {field: value}}`; the ops dashboard and `filecdn
metrics` share them. Counters are summed; `state.*` fields are sampled levels, so a group
of minutes takes their highest value and a window total their latest.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

STATE_PREFIX = "state."  # sampled levels (shared.metrics.set_state), not counters

Bucket = Mapping[str, int]
Buckets = Mapping[int, Bucket]


@dataclass(frozen=True, slots=True)
class Window:
    """A dashboard window: how far back, and how many seconds each chart point covers."""

    name: str
    minutes: int
    step: int  # seconds; a multiple of 60

    @property
    def points(self) -> int:
        return self.minutes * 60 // self.step


# 15 and 60 points a minute apart, 144 ten-minute points, 168 hourly points.
WINDOWS = {
    w.name: w
    for w in (
        Window("15m", 15, 60),
        Window("1h", 60, 60),
        Window("24h", 1440, 600),
        Window("7d", 10080, 3600),
    )
}


def is_state(name: str) -> bool:
    return name.startswith(STATE_PREFIX)


def sort_key(name: str) -> tuple[tuple[int, float, str], ...]:
    """Order fields by family, numbers by value: `le_5` before `le_10`, `le_inf` last,
    `requests.200` before `requests.404` before `requests.other`."""
    key = []
    for part in name.split("."):
        number = part[3:] if part.startswith("le_") else part
        if number == "inf":
            key.append((0, math.inf, ""))
            continue
        try:
            key.append((0, float(number), ""))
        except ValueError:
            key.append((1, 0.0, part))
    return tuple(key)


def merge(buckets: Iterable[Bucket]) -> dict[str, int]:
    """Counters summed, levels at their highest."""
    out: dict[str, int] = {}
    for b in buckets:
        for name, v in b.items():
            out[name] = max(out.get(name, v), v) if is_state(name) else out.get(name, 0) + v
    return out


def totals(buckets: Buckets) -> dict[str, int]:
    """A window's totals: counters summed, each level as last sampled."""
    out = merge(buckets.values())
    for start in sorted(buckets):
        out.update({k: v for k, v in buckets[start].items() if is_state(k)})
    return out


@dataclass(frozen=True, slots=True)
class Point:
    start: int  # Unix seconds
    seconds: float  # how much time its counts cover (less for the group under way)
    values: dict[str, int]
    sampled: bool  # whether any minute in it had a bucket (levels are unknown otherwise)


def downsample(buckets: Buckets, window: Window, now: float) -> list[Point]:
    """The window as `window.points` points of `window.step` seconds, aligned to the step,
    oldest first; the last one is the step under way."""
    current = int(now) // window.step * window.step
    starts = [current - window.step * i for i in range(window.points - 1, -1, -1)]
    groups: dict[int, list[Bucket]] = {s: [] for s in starts}
    for minute, bucket in buckets.items():
        group = minute // window.step * window.step
        if group in groups:
            groups[group].append(bucket)
    return [
        Point(s, float(max(1, min(window.step, now - s))), merge(groups[s]), bool(groups[s]))
        for s in starts
    ]


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else 0.0


def ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx")


def status_class(status: str) -> str:
    """`2xx`..`5xx` for a three-digit status, else `other` (e.g. the edge's `other`)."""
    if len(status) == 3 and status.isdigit() and status[0] in "2345":
        return f"{status[0]}xx"
    return "other"


def by_status_class(values: Bucket, prefix: str) -> dict[str, int]:
    """Fields `<prefix><status>` summed by status class."""
    out: dict[str, int] = {}
    for name, v in values.items():
        if name.startswith(prefix):
            cls = status_class(name[len(prefix) :])
            out[cls] = out.get(cls, 0) + v
    return out


def histogram(values: Bucket, prefix: str, bounds: Sequence[float] = ()) -> list[tuple[float, int]]:
    """Cumulative buckets `<prefix>le_<bound>` as (bound, count) by bound, +Inf last.

    Writers leave out the buckets below the first one that counted anything (they are 0);
    `bounds` names every finite bound so that such a bucket still bounds the next one.
    """
    found: dict[float, int] = {b: 0 for b in bounds}
    for name, n in values.items():
        if name.startswith(prefix + "le_"):
            raw = name[len(prefix) + 3 :]
            try:
                bound = math.inf if raw == "inf" else float(raw)
            except ValueError:
                continue
            found[bound] = n
    running = 0
    out = []
    for bound in sorted(found):
        running = max(running, found[bound])  # cumulative: never decreasing
        out.append((bound, running))
    return out


def quantile(q: float, buckets: Sequence[tuple[float, int]]) -> float | None:
    """The q-quantile of cumulative buckets, interpolated within its bucket the way
    Prometheus's histogram_quantile does; None without observations."""
    if not buckets or buckets[-1][1] == 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0
    for bound, count in buckets:
        if count >= rank and count > lower_count:
            if math.isinf(bound):
                return lower_bound  # above the highest finite bound: say that bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound
