"""`filecdn metrics` shows the per-minute counters the domain writes to Redis."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid

import aiohttp
import pytest

from shared import metrics
from shared.resources import Resources
from tests.conftest import Stack
from tests.helpers import upload


async def test_metrics_command_shows_this_minutes_uploads(
    api: aiohttp.ClientSession, stack: Stack
) -> None:
    def uploads() -> int:
        out = subprocess.run(
            [sys.executable, "-m", "cli", "metrics", "--minutes", "2", "--json"],
            env=stack.env,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return int(json.loads(out.stdout)["totals"].get("files.uploaded", 0))

    before = uploads()
    await upload(api, b"counted")
    assert uploads() == before + 1
    table = subprocess.run(
        [sys.executable, "-m", "cli", "metrics"],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert "files.uploaded" in table


async def test_metrics_rows_go_by_bound_with_a_rate_per_second(
    stack: Stack, res: Resources
) -> None:
    family = f"test{uuid.uuid4().hex[:8]}"
    counts = {
        f"{family}.latency_ms.le_inf": 40,
        f"{family}.latency_ms.le_100": 30,
        f"{family}.latency_ms.le_10": 20,
        f"{family}.latency_ms.le_5": 10,
        f"{family}.requests.other": 1,
        f"{family}.requests.404": 2,
        f"{family}.requests.200": 3,
    }
    await metrics.add(res.redis, counts, 300)

    def cli(*args: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "cli", "metrics", "--minutes", "3", *args],
            env={**stack.env, "COLUMNS": "250"},
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout

    rows = [line for line in cli().splitlines() if family in line]
    order = [next(n for n in counts if re.search(re.escape(n) + r"\s", row)) for row in rows]
    assert order == [
        f"{family}.latency_ms.le_5",
        f"{family}.latency_ms.le_10",
        f"{family}.latency_ms.le_100",
        f"{family}.latency_ms.le_inf",
        f"{family}.requests.200",
        f"{family}.requests.404",
        f"{family}.requests.other",
    ]
    report = json.loads(cli("--json"))
    seconds = report["seconds"]
    assert 120 < seconds <= 180  # two whole minutes and the one under way
    for name, n in counts.items():
        assert report["totals"][name] == n
        assert report["per_second"][name] == pytest.approx(n / seconds, rel=0.05)
