"""The worker's Prometheus families (this process; scraped on WORKER_OPS_PORT) and the
per-minute fields it adds to the Redis buckets (every worker summed, for the dashboard).

Per-minute fields: `worker.expiry.runs`, the lag histogram `worker.expiry.lag_ms.le_<ms>`
(cumulative, like the edge's latency) and `worker.reconcile.runs|failures`,
`worker.reconcile.fixed.<kind>`.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# How late an expiry job may run: from a tenth of a second to five minutes.
LAG_BOUNDS_MS = (100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000)

JOBS = Counter(
    "filecdn_worker_jobs_total",
    "Expiry jobs run, by function and outcome (expired, stale, retry, error)",
    ["function", "outcome"],
)
EXPIRY_LAG = Histogram(
    "filecdn_worker_expiry_lag_seconds",
    "How late an expiry job started after it was due",
    ["function"],
    buckets=[b / 1000 for b in LAG_BOUNDS_MS],
)
EVENTS = Counter(
    "filecdn_worker_events_total",
    "File events taken from the stream, by outcome (handled, malformed, failed)",
    ["outcome"],
)
RECONCILE_RUNS = Counter(
    "filecdn_worker_reconcile_runs_total", "Reconcile passes, by outcome (ok, error)", ["outcome"]
)
RECONCILE_FIXED = Counter(
    "filecdn_worker_reconcile_fixed_total", "What reconcile passes repaired, by kind", ["kind"]
)
RECONCILE_DURATION = Histogram(
    "filecdn_worker_reconcile_duration_seconds",
    "Time a reconcile pass took",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
RECONCILE_LAST_SUCCESS = Gauge(
    "filecdn_worker_reconcile_last_success_timestamp_seconds",
    "When this process last finished a reconcile pass",
)


def expiry_fields(lag_ms: float) -> dict[str, int]:
    """One job run's per-minute fields: a run, and its lag in the cumulative buckets."""
    fields = {"worker.expiry.runs": 1, "worker.expiry.lag_ms.le_inf": 1}
    for bound in LAG_BOUNDS_MS:
        if lag_ms <= bound:
            fields[f"worker.expiry.lag_ms.le_{bound}"] = 1
    return fields


def reconcile_fields(fixed: dict[str, int] | None) -> dict[str, int]:
    """A pass's per-minute fields; None for a failed pass."""
    if fixed is None:
        return {"worker.reconcile.runs": 1, "worker.reconcile.failures": 1}
    return {
        "worker.reconcile.runs": 1,
        **{f"worker.reconcile.fixed.{kind}": n for kind, n in fixed.items() if n},
    }
