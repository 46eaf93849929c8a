"""A dependency that refuses or hangs gets a bounded, clear answer: REST a JSON 503 with
Retry-After, gRPC UNAVAILABLE (which the SDK retries); and the API recovers by itself.

One API process reaches PostgreSQL, Redis and S3 through proxies (`tests/faults.py`) that
refuse (nothing listens, open connections reset) or hang (connections accepted and kept,
nothing forwarded) on cue. Its timeouts are lowered so the suite stays quick;
`bench/outages.py` measures the defaults for the README.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest

from api.errors import PHRASES, UNAVAILABLE_MESSAGE
from cli.embedded import free_port
from cli.stack import filecdn_argv
from shared.resources import Resources
from tests.conftest import Stack, new_team
from tests.faults import SCENARIOS, Links, Mode, during_outage, faulty_links, tcp_ready
from tests.helpers import png, upload, wait_for_log

TIMEOUTS = {
    "DB_TIMEOUT": "2",
    "REDIS_TIMEOUT": "1",
    "S3_CONNECT_TIMEOUT": "1",
    "S3_READ_TIMEOUT": "2",
}


@dataclass
class OutageApi:
    links: Links
    api_url: str
    grpc_target: str
    key: str
    file_id: str
    name: str  # its process's log: logs/<name>.log


@pytest.fixture(scope="module")
async def outage_api(stack: Stack, res: Resources) -> AsyncIterator[OutageApi]:
    team = await new_team(res)
    async with faulty_links(stack.env) as (env, links):
        api_port, grpc_port = free_port(), free_port()
        name = f"outage-api-{uuid.uuid4().hex[:6]}"
        stack.sup.start(
            name,
            filecdn_argv("api"),
            env={
                **env,
                **TIMEOUTS,
                "API_PORT": str(api_port),
                "GRPC_PORT": str(grpc_port),
                "OPS_PORT": str(free_port()),
            },
        )
        try:
            await tcp_ready(api_port)
            await tcp_ready(grpc_port)
            api_url = f"http://127.0.0.1:{api_port}"
            async with aiohttp.ClientSession(
                base_url=api_url, headers={"Authorization": f"Bearer {team.key}"}
            ) as api:
                f = await upload(api, png())
            yield OutageApi(links, api_url, f"localhost:{grpc_port}", team.key, f["id"], name)
        finally:
            # In a thread: the proxies run in this loop, and the API closes its connections
            # through them as it stops.
            await asyncio.to_thread(stack.sup.stop, name)


@pytest.mark.parametrize(("label", "dependency", "mode"), SCENARIOS, ids=[s[0] for s in SCENARIOS])
async def test_an_outage_is_503_and_unavailable_then_recovers(
    outage_api: OutageApi, label: str, dependency: str, mode: Mode
) -> None:
    outcome = await during_outage(
        outage_api.links,
        label,
        dependency,
        mode,
        api_url=outage_api.api_url,
        grpc_target=outage_api.grpc_target,
        key=outage_api.key,
        file_id=outage_api.file_id,
    )
    assert outcome.rest.status == 503, outcome
    assert outcome.rest.retry_after == "1"
    assert json.loads(outcome.rest.body) == {
        "code": PHRASES["UNAVAILABLE"],
        "error": UNAVAILABLE_MESSAGE,
    }
    assert (outcome.grpc.code, outcome.grpc.details) == ("UNAVAILABLE", UNAVAILABLE_MESSAGE)
    assert outcome.grpc.trailers["retry-after"] == "1"
    assert outcome.grpc.trailers["grpc-retry-pushback-ms"] == "1000"


async def test_s3_failing_mid_download_cuts_the_connection(
    outage_api: OutageApi, stack: Stack
) -> None:
    """Headers and part of the body are out when S3 hangs: the API cannot answer again, so
    it cuts the connection (a short body, never a second response inside the first)."""
    size = 48 * 1024 * 1024  # more than every socket buffer on the way can hold
    async with aiohttp.ClientSession(
        base_url=outage_api.api_url, headers={"Authorization": f"Bearer {outage_api.key}"}
    ) as api:
        f = await upload(api, b"\x89PNG\r\n\x1a\n" + os.urandom(size - 8))
    request_id = uuid.uuid4().hex
    host, port = outage_api.api_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"GET /v1/files/{f['id']}/content HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {outage_api.key}\r\nX-Request-Id: {request_id}\r\n\r\n".encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and f"Content-Length: {size}".encode() in head
    outage_api.links.s3.hang()
    try:
        body = await reader.read(-1)  # until the API closes the connection
    finally:
        await outage_api.links.s3.restore()
        writer.close()
    assert len(body) < size
    line = await wait_for_log(stack, outage_api.name, event="request", request_id=request_id)
    assert line["status"] == 503
