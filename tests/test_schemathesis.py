"""The live API against its own OpenAPI document, fuzzed by schemathesis.

Every phase (the document's examples, boundary values, random valid and invalid requests,
and stateful sequences that follow the document's links from an upload to the operations on
its file id), a fixed seed, a bounded number of examples (`tests/schemathesis.toml`). Every
check: no 5xx, documented status codes, content types, headers and bodies, invalid input
refused, valid input accepted, deleted files gone, 401 without the key, 405 with Allow for
other methods. Then nothing may be left behind: no object without a row, no open multipart
upload, no token-cache entry without an active URL, no queued job for a missing row.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from api import openapi
from cli.embedded import free_port, tcp_open, wait_until
from cli.stack import filecdn_argv
from shared.resources import Resources
from tests.conftest import TEST_LIMITS, Stack, TeamKey
from tests.helpers import Leftovers, leftovers

CONFIG = Path(__file__).with_name("schemathesis.toml")
SEED = 20261125


@pytest.fixture
def contract_api(stack: Stack) -> Iterator[str]:
    """An API process with the contract's own limits on the suite's servers: the suite's
    one-second minimum lifetime would make fresh files vanish under schemathesis's checks."""
    port = free_port()
    env = {k: v for k, v in stack.env.items() if k not in TEST_LIMITS}
    env.update({"API_PORT": str(port), "GRPC_PORT": str(free_port()), "OPS_PORT": str(free_port())})
    stack.sup.start("contract-api", filecdn_argv("api"), env=env)
    try:
        wait_until(lambda: tcp_open("127.0.0.1", port), 60, "contract API")
        yield f"http://127.0.0.1:{port}"
    finally:
        stack.sup.stop("contract-api")


def run_schemathesis(api_url: str, key: str, report: Path) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "run"]
    argv += [f"{api_url}/openapi.json", "--header", f"Authorization: Bearer {key}"]
    argv += ["--seed", str(SEED), "--no-color"]
    argv += ["--report", "json", "--report-json-path", str(report)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=600)


def figures(report: dict[str, Any], output: str) -> str:
    """Operations by test cases, and the stateful phase's scenarios and links, for the log."""
    scenarios = re.search(r"Scenarios:\s+(\d+)", output)
    links = re.search(r"API Links:\s+(\d+ covered / \d+) selected", output)
    return (
        f"schemathesis {report['schemathesis_version']}, seed {report['seed']}: "
        f"{report['operations']['tested']} operations, "
        f"{report['test_cases']['generated']} test cases in "
        f"{', '.join(report['phases'])} ({scenarios[1] if scenarios else '?'} stateful "
        f"scenarios, links {links[1] if links else '?'}), "
        f"{len(report['failures'])} failures, {report['running_time']:.1f} s"
    )


async def test_the_api_serves_its_document_without_a_key(
    anon: aiohttp.ClientSession, stack: Stack
) -> None:
    async with anon.get("/openapi.json") as r:
        assert r.status == 200 and r.content_type == "application/json"
        assert await r.json() == openapi.document(stack.settings)


async def test_the_live_api_keeps_its_openapi_document(
    contract_api: str, team: TeamKey, res: Resources, tmp_path: Path
) -> None:
    before = await leftovers(res)
    report_path = tmp_path / "schemathesis.json"
    done = await asyncio.to_thread(run_schemathesis, contract_api, team.key, report_path)
    assert done.returncode == 0, done.stdout[-20000:] + done.stderr[-5000:]
    report = json.loads(report_path.read_text())
    print(figures(report, done.stdout))
    assert report["failures"] == [] and report["errors"] == []
    documented = sum(
        1
        for item in openapi.document(res.settings)["paths"].values()
        for key in item
        if key != "parameters"
    )
    # Every operation but `GET /openapi.json`, which schemathesis reads rather than tests.
    assert report["operations"]["tested"] == documented - 1
    assert {name: p["status"] for name, p in report["phases"].items()} == {
        "examples": "success",
        "coverage": "success",
        "fuzzing": "success",
        "stateful": "success",
    }
    assert (await leftovers(res)).since(before) == Leftovers(
        frozenset(), 0, frozenset(), frozenset()
    )


async def test_leftovers_sees_each_kind_of_leftover(res: Resources, team: TeamKey) -> None:
    from shared import scheduling
    from shared.token_cache import UrlRecord

    before = await leftovers(res)
    file_id = str(uuid.uuid4())
    key = f"objects/file_{file_id}"
    writer = res.storage.writer(key)
    await writer.write(b"bytes")
    await writer.finish()
    record = UrlRecord(f"file_{file_id}", "x.png", key, "image/png", 5, '"e"', 0, None, 1)
    await res.tokens.put("leftover-token", record)
    job = scheduling.file_expiry(f"file_{file_id}", datetime.now(UTC) + timedelta(hours=1))
    await scheduling.enqueue(res.arq, job)
    try:
        assert (await leftovers(res)).since(before) == Leftovers(
            frozenset({key}), 0, frozenset({"leftover-token"}), frozenset({job.job_id})
        )
    finally:
        await res.storage.delete(key)
        await res.tokens.delete("leftover-token")
        await res.redis.zrem(res.settings.arq_queue_name, job.job_id)
    assert not (await leftovers(res)).since(before)
