"""The fault plan, and how long each broken path takes to work again.

Each fault sends SIGKILL or SIGSTOP to one part of the stack, waits `down` seconds under
load, then brings it back (a restart on the same port and data, or SIGCONT) and probes the
path it broke until a request through it succeeds: that wait is the recovery time.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp

from tests.chaos.history import now, sha256
from tests.chaos.stack import ChaosStack

PROBE_TIMEOUT = aiohttp.ClientTimeout(total=2)
RECOVERY_LIMIT = 60.0  # a path that does not work again within this is a failed recovery

# (target, signal): every part, each with both signals, one at a time.
DEFAULT_PLAN: list[tuple[str, signal.Signals]] = [
    ("redis-empty", signal.SIGKILL),
    ("redis", signal.SIGKILL),
    ("postgres", signal.SIGSTOP),
    ("s3", signal.SIGKILL),
    ("api", signal.SIGKILL),
    ("worker", signal.SIGSTOP),
    ("edge-worker", signal.SIGKILL),
    ("redis", signal.SIGSTOP),
    ("postgres", signal.SIGKILL),
    ("s3", signal.SIGSTOP),
    ("api", signal.SIGSTOP),
    ("worker", signal.SIGKILL),
    ("edge-worker", signal.SIGSTOP),
]

# What "works again" means for each target, in words (the report prints it).
PATHS = {
    "api": "REST list answers 200",
    "worker": "a file deleted after the restore has its object removed",
    "edge-worker": "8 GETs on new connections (both workers) answer 200",
    "redis": "an edge GET of a live URL answers 200 (token lookup)",
    "redis-empty": "the same, once reconcile has rebuilt the token cache",
    "postgres": "REST GET of a file answers 200",
    "s3": "REST download answers 200, byte-exact",
}


@dataclass
class Fault:
    target: str
    sig: signal.Signals
    started: float = 0.0  # when the signal was sent
    restored: float = 0.0  # when we began to bring it back
    recovered: float | None = None  # first success through the path
    pids: list[int] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.target} {self.sig.name}"

    @property
    def recovery(self) -> float | None:
        return None if self.recovered is None else self.recovered - self.restored


@dataclass
class Probe:
    """A file and a public URL of the probe team, made before the faults start."""

    api_url: str
    key: str
    file_id: str
    data: bytes
    public_url: str
    db_dsn: str

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


async def _status(session: aiohttp.ClientSession, url: str, **kw: object) -> tuple[int, bytes]:
    try:
        async with session.get(url, timeout=PROBE_TIMEOUT, **kw) as r:  # type: ignore[arg-type]
            return r.status, await r.read()
    except (aiohttp.ClientError, TimeoutError, OSError):
        return 0, b""


def probe_for(
    target: str, probe: Probe, session: aiohttp.ClientSession, since: Callable[[], float]
) -> Callable[[], Awaitable[bool]]:
    """A check of the path the target's fault broke."""
    api = probe.api_url

    async def rest_list() -> bool:
        status, _ = await _status(session, f"{api}/v1/files?limit=1", headers=probe.headers())
        return status == 200

    async def rest_get() -> bool:
        url = f"{api}/v1/files/{probe.file_id}"
        status, _ = await _status(session, url, headers=probe.headers())
        return status == 200

    async def rest_download() -> bool:
        status, body = await _status(
            session, f"{api}/v1/files/{probe.file_id}/content", headers=probe.headers()
        )
        return status == 200 and sha256(body) == sha256(probe.data)

    async def edge_get() -> bool:
        status, body = await _status(session, probe.public_url)
        return status == 200 and body == probe.data

    async def edge_both_workers() -> bool:
        results = await asyncio.gather(
            *(_status(session, probe.public_url, headers={"Connection": "close"}) for _ in range(8))
        )
        return all(status == 200 for status, _ in results)

    async def worker_deletes() -> bool:
        import asyncpg

        try:
            conn = await asyncio.wait_for(asyncpg.connect(probe.db_dsn), 2)
        except (OSError, TimeoutError, asyncpg.PostgresError):
            return False
        try:
            done = await conn.fetchval("SELECT max(object_deleted_at) FROM files")
        finally:
            await conn.close()
        return done is not None and done.timestamp() > since()

    return {
        "api": rest_list,
        "worker": worker_deletes,
        "edge-worker": edge_both_workers,
        "redis": edge_get,
        "redis-empty": edge_get,
        "postgres": rest_get,
        "s3": rest_download,
    }[target]


VICTIM_BYTES = 16 * 1024 * 1024
_VICTIM_CHUNK = 512 * 1024


async def victim_upload(probe: Probe, under_way: asyncio.Event) -> None:
    """A slow upload (a client on a thin line): sets `under_way` once more than one S3 part
    (5 MiB) has been sent, so that the API holds an open multipart upload when it dies."""
    boundary = "chaosvictim"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="v.png"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()

    async def body() -> AsyncIterator[bytes]:
        yield head + b"\x89PNG\r\n\x1a\n"
        for sent in range(0, VICTIM_BYTES, _VICTIM_CHUNK):
            yield bytes(_VICTIM_CHUNK)
            if sent > 7 * 1024 * 1024:
                under_way.set()
            await asyncio.sleep(0.05)
        yield f"\r\n--{boundary}--\r\n".encode()

    headers = {
        **probe.headers(),
        "Content-Type": f"multipart/form-data; boundary={boundary}",
    }
    try:
        async with (
            aiohttp.ClientSession() as s,
            s.post(f"{probe.api_url}/v1/files", data=body(), headers=headers) as r,
        ):
            await r.read()
    except (aiohttp.ClientError, OSError):
        pass  # cut by the kill: what the API leaves behind is the point
    finally:
        under_way.set()


async def run_fault(
    stack: ChaosStack, fault: Fault, probe: Probe, down: float, settle: float
) -> None:
    """Break, wait, restore, time the recovery, then let the load run on for `settle`.
    Before the API's SIGKILL, a slow large upload is under way (beside the load's)."""
    async with aiohttp.ClientSession() as session:
        check = probe_for(fault.target, probe, session, lambda: fault.restored)
        victim = None
        if fault.target == "api" and fault.sig == signal.SIGKILL:
            under_way = asyncio.Event()
            victim = asyncio.create_task(victim_upload(probe, under_way))
            await asyncio.wait_for(under_way.wait(), 30)
        fault.started = now()
        fault.pids = await asyncio.to_thread(stack.break_, fault.target, fault.sig)
        await asyncio.sleep(down)
        fault.restored = now()
        await asyncio.to_thread(stack.restore, fault.target, fault.sig, fault.pids)
        deadline = time.monotonic() + RECOVERY_LIMIT
        while time.monotonic() < deadline:
            if await check():
                fault.recovered = now()
                break
            await asyncio.sleep(0.05)
        if victim is not None:
            await victim
    await asyncio.sleep(settle)
