"""The arithmetic behind the dashboard and `filecdn metrics`, on plain values: row order,
histogram quantiles as Prometheus computes them, windows cut into aligned steps."""

from __future__ import annotations

import math

import pytest

from shared import series

MINUTE = 60


def test_rows_sort_by_family_then_number_with_buckets_by_bound() -> None:
    names = [
        "edge.latency_ms.le_inf",
        "edge.latency_ms.le_100",
        "edge.latency_ms.le_10",
        "edge.latency_ms.le_5",
        "edge.requests.other",
        "edge.requests.404",
        "edge.requests.200",
        "edge.bytes",
    ]
    assert sorted(names, key=series.sort_key) == [
        "edge.bytes",
        "edge.latency_ms.le_5",
        "edge.latency_ms.le_10",
        "edge.latency_ms.le_100",
        "edge.latency_ms.le_inf",
        "edge.requests.200",
        "edge.requests.404",
        "edge.requests.other",
    ]


def test_histogram_fills_the_buckets_writers_leave_out_and_stays_cumulative() -> None:
    values = {"x.le_10": 3, "x.le_100": 7, "x.le_inf": 8, "other": 99}
    assert series.histogram(values, "x.", (1, 10, 100)) == [
        (1, 0),
        (10, 3),
        (100, 7),
        (math.inf, 8),
    ]


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        (0.25, 5.0),  # rank 2 of 8, inside (0, 10]: 10 * 2/4
        (0.5, 10.0),  # rank 4: the top of the first bucket
        (0.75, 70.0),  # rank 6, inside (10, 100] (counts 4..7): 10 + 90 * 2/3
        (0.99, 100.0),  # rank 7.92: in +Inf, so the highest finite bound (as Prometheus)
    ],
)
def test_quantiles_interpolate_within_a_bucket_like_prometheus(q: float, expected: float) -> None:
    buckets = [(10.0, 4), (100.0, 7), (math.inf, 8)]
    assert series.quantile(q, buckets) == pytest.approx(expected)


def test_no_observations_have_no_quantile() -> None:
    assert series.quantile(0.5, []) is None
    assert series.quantile(0.5, [(1.0, 0), (math.inf, 0)]) is None


def test_status_classes() -> None:
    assert [series.status_class(s) for s in ("200", "304", "499", "503", "other", "42")] == [
        "2xx",
        "3xx",
        "4xx",
        "5xx",
        "other",
        "other",
    ]
    fields = {"e.200": 2, "e.206": 1, "e.404": 5, "e.other": 1, "f.200": 9}
    assert series.by_status_class(fields, "e.") == {"2xx": 3, "4xx": 5, "other": 1}


def test_a_window_is_cut_into_aligned_steps_with_the_last_one_partial() -> None:
    window = series.Window("1h-test", 60, 10 * MINUTE)
    now = 1_800_000_000 + 125.0  # 2 min 5 s into a ten-minute step
    step_start = int(now) // 600 * 600
    buckets = {
        step_start - 600: {"c": 2, "state.q": 4},
        step_start - 540: {"c": 3, "state.q": 9},
        step_start + 60: {"c": 5},
        step_start - 3600: {"c": 100},  # before the window
    }
    points = series.downsample(buckets, window, now)
    assert [p.start for p in points] == [step_start - 600 * i for i in range(5, -1, -1)]
    assert points[-2].values == {"c": 5, "state.q": 9}  # counters add, levels take the highest
    assert points[-2].seconds == 600 and points[-2].sampled
    assert points[-1].values == {"c": 5} and points[-1].seconds == now - step_start
    assert points[0].values == {} and not points[0].sampled


def test_window_totals_sum_counters_and_keep_the_latest_level() -> None:
    totals = series.totals({120: {"c": 1, "state.q": 7}, 60: {"c": 2, "state.q": 3}})
    assert totals == {"c": 3, "state.q": 7}


def test_windows_offered() -> None:
    assert {n: (w.points, w.step) for n, w in series.WINDOWS.items()} == {
        "15m": (15, 60),
        "1h": (60, 60),
        "24h": (144, 600),
        "7d": (168, 3600),
    }
