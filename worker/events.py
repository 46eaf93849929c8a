"""The file-event consumer: a Redis Streams consumer group, at-least-once.

Handlers are idempotent and check PostgreSQL before acting, so redelivery after a crash
(pending entries are reclaimed with XAUTOCLAIM once idle) never does harm: each object is
deleted, and counted, once.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable

import structlog
from redis.exceptions import ResponseError

from shared import events, public_urls
from shared.actors import WORKER
from shared.resources import Resources
from shared.unit_of_work import unit_of_work
from worker.failures import log_failure
from worker.metrics import EVENTS

log = structlog.get_logger(__name__)

_BATCH = 32
_BLOCK_MS = 1000


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


async def ensure_group(res: Resources) -> None:
    try:
        # From "0": events published before the group existed (or after Redis lost it) count.
        await res.redis.xgroup_create(events.STREAM, events.GROUP, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


async def handle(res: Resources, event: events.FileEvent) -> None:
    if event.type != events.FILE_DELETED:
        log.warning("unknown event type ignored", type=event.type)
        return
    async with unit_of_work(res, WORKER) as uow:
        row = await uow.conn.fetchrow(
            "SELECT deleted_at, object_deleted_at FROM files WHERE id = $1 FOR UPDATE",
            event.file_id,
        )
        if row is None or row["deleted_at"] is None or row["object_deleted_at"] is not None:
            return  # stray, or already handled
        # Normally done already by the delete or expiry that announced the event.
        await public_urls.revoke_locked(uow, event.file_id, reason="deleted")
        # Inside the transaction on purpose: the row says "object deleted" only once it is
        # (a failed commit leaves it pending, and deleting again is harmless).
        await res.storage.delete(event.object_key)
        await uow.conn.execute(
            "UPDATE files SET object_deleted_at = now() WHERE id = $1", event.file_id
        )
        uow.count("objects.deleted", file_id=event.file_id, reason=event.reason)


Beat = Callable[[], None]


def _no_beat() -> None:
    pass


async def _process(
    res: Resources, entries: list[tuple[bytes, dict[bytes, bytes]]], beat: Beat = _no_beat
) -> int:
    done = 0
    for entry_id, fields in entries:
        beat()
        try:
            event = events.FileEvent.from_fields(fields)
        except (KeyError, ValueError, UnicodeDecodeError):
            log.error("malformed event dropped", entry_id=entry_id)
            EVENTS.labels("malformed").inc()
        else:
            try:
                await handle(res, event)  # an exception leaves the entry pending: retried later
            except Exception:
                EVENTS.labels("failed").inc()
                raise
            EVENTS.labels("handled").inc()
        await res.redis.xack(events.STREAM, events.GROUP, entry_id)
        done += 1
    return done


async def consume(res: Resources, name: str, stop: asyncio.Event, beat: Beat = _no_beat) -> None:
    """Consume until stopped: own pending entries first, then idle ones of dead consumers.
    `beat` is called every turn (at least once a second) and for every entry."""
    claim_idle = res.settings.event_claim_idle_ms
    next_claim = 0.0
    while not stop.is_set():
        beat()
        try:
            await ensure_group(res)
            loop = asyncio.get_running_loop()
            if loop.time() >= next_claim:
                next_claim = loop.time() + claim_idle / 1000 / 2
                await _reclaim(res, name, claim_idle, beat)
            reply = await res.redis.xreadgroup(
                events.GROUP, name, {events.STREAM: ">"}, count=_BATCH, block=_BLOCK_MS
            )
            for _, entries in reply or []:
                await _process(res, entries, beat)
        except Exception as exc:
            log_failure(log, "event consumer", exc)
            await asyncio.sleep(1)


_FORGET_CONSUMER_MS = 3600_000


async def _forget_dead_consumers(res: Resources, name: str) -> None:
    """Each worker process is a consumer; drop those long gone with nothing pending."""
    for c in await res.redis.xinfo_consumers(events.STREAM, events.GROUP):
        cname = c["name"].decode() if isinstance(c["name"], bytes) else c["name"]
        if cname != name and c["pending"] == 0 and c["idle"] > _FORGET_CONSUMER_MS:
            await res.redis.xgroup_delconsumer(events.STREAM, events.GROUP, cname)


async def _reclaim(res: Resources, name: str, claim_idle: int, beat: Beat) -> None:
    # Our own pending entries (a restart with the same name), then everyone's idle ones.
    own = await res.redis.xreadgroup(events.GROUP, name, {events.STREAM: "0"}, count=_BATCH)
    for _, entries in own or []:
        await _process(res, entries, beat)
    start = "0-0"
    while True:
        start, claimed, *_ = await res.redis.xautoclaim(
            events.STREAM,
            events.GROUP,
            name,
            min_idle_time=claim_idle,
            start_id=start,
            count=_BATCH,
        )
        if claimed:
            await _process(res, claimed, beat)
        if start in (b"0-0", "0-0"):
            break
    await _forget_dead_consumers(res, name)
