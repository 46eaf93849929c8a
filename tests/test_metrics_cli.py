"""`filecdn metrics` shows the per-minute counters the domain writes to Redis."""

from __future__ import annotations

import json
import subprocess
import sys

import aiohttp

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
