"""The figures: requests, faults, errors by kind per fault, recovery times, invariants."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from tests.chaos.checks import Verdict
from tests.chaos.faults import PATHS, Fault
from tests.chaos.history import History, Request


def _kinds(requests: Sequence[Request], limit: int = 6) -> str:
    """'edge-get 503x12, upload ServerDisconnectedErrorx2, …' for the failed ones."""
    kinds = Counter(f"{r.op} {r.outcome}" for r in requests if r.failed)
    if not kinds:
        return "none"
    shown = [f"{k}x{n}" for k, n in kinds.most_common(limit)]
    rest = sum(kinds.values()) - sum(n for _, n in kinds.most_common(limit))
    if rest:
        shown.append(f"+{rest} more")
    return ", ".join(shown)


def windows(h: History, faults: Sequence[Fault], end: float) -> list[tuple[str, list[Request]]]:
    """The requests started in each period: before the first fault, then from each fault's
    signal until the next fault's (its outage, recovery and settling)."""
    starts = [f.started for f in faults] + [end]
    out = [("before any fault", [r for r in h.requests if r.started < starts[0]])]
    for i, f in enumerate(faults):
        out.append((f.name, [r for r in h.requests if starts[i] <= r.started < starts[i + 1]]))
    return out


def _fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}"


def table(rows: list[list[str]], header: list[str], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(
        [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
        + [fmt.format(*r) for r in rows]
    )


def render(
    h: History, faults: Sequence[Fault], end: float, verdict: Verdict, *, markdown: bool
) -> str:
    total = len(h.requests)
    failed = sum(r.failed for r in h.requests)
    by_op = Counter(r.op for r in h.requests)
    parts = [
        f"requests: {total} ({', '.join(f'{op} {n}' for op, n in by_op.most_common())}); "
        f"failed (5xx, timeouts, cut connections): {failed}; faults: {len(faults)}",
        "",
    ]
    fault_rows = []
    by_name = {f.name: f for f in faults}
    for name, reqs in windows(h, faults, end):
        f = by_name.get(name)
        fault_rows.append(
            [
                name,
                "—" if f is None else _fmt(f.restored - f.started),
                "—" if f is None else _fmt(f.recovery) if f.recovered else "NOT RECOVERED",
                str(len(reqs)),
                str(sum(r.failed for r in reqs)),
                _kinds(reqs),
            ]
        )
    parts.append(
        table(
            fault_rows,
            ["fault", "down s", "recovery s", "requests", "failed", "errors by kind"],
            markdown,
        )
    )
    parts.append("")
    parts.append(
        "recovery: from the restart (or SIGCONT) until the first success of — "
        + "; ".join(f"{t}: {p}" for t, p in PATHS.items())
    )
    parts.append("")
    inv_rows = [
        [inv, "ok" if not fails else f"FAILED x{len(fails)}", fails[0] if fails else ""]
        for inv, fails in verdict.failures.items()
    ]
    parts.append(table(inv_rows, ["invariant", "result", "first failure"], markdown))
    parts.append("")
    parts.append("counted: " + ", ".join(f"{k} {n}" for k, n in verdict.counted.items()))
    return "\n".join(parts)
