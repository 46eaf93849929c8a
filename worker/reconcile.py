"""Reconcile: rebuild Redis projections from PostgreSQL and sweep orphaned objects.

Runs every RECONCILE_INTERVAL, and at once when Redis (or the token cache's own Redis)
comes back empty (its epoch key is gone). Every step is idempotent and safe beside the API
and other workers:
- cache entries are restored only for live rows, under `FOR SHARE` of the file row and of
  the URL row, so a concurrent revoke or delete (which holds `FOR UPDATE`) is never
  overtaken, also one that commits after the batch's snapshot: locking a row that changed
  since makes PostgreSQL re-check it against the query (an unlocked URL row would be read
  as of the snapshot, and a revoked token written back); an entry is written
  when missing or when its bytes differ from the row's record (an older record format:
  this is how a rolling upgrade's entries get rewritten), one pipeline per batch;
- entries are removed only for tokens whose row is committed as revoked, or that have had
  no row at all for two passes (a create that failed after writing its entry);
- overdue URLs and files are retired directly (their jobs may have been lost);
- objects are deleted only for rows marked deleted, or with no row after a grace period
  (an upload in progress has no row yet);
- at the orphan sweep's cadence, rows past their retention are deleted (`retention.py`).

Each pass is recorded for the operators: what it fixed, how long it took, or why it failed
(`shared.ops_state.record_reconcile`, Prometheus, the per-minute buckets). The reconciler
beats the worker's heartbeat per batch, so a long pass is not taken for a stuck one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import structlog

from shared import events, files, metrics, ops_state, public_urls, scheduling
from shared.actors import WORKER
from shared.resources import Resources
from shared.unit_of_work import unit_of_work
from worker import events as event_consumer
from worker import metrics as observed
from worker import retention
from worker.failures import log_failure

log = structlog.get_logger(__name__)

EPOCH_KEY = "filecdn:epoch"
# Taken with SET NX for one interval: one worker does a periodic pass at a time.
LOCK_KEY = "filecdn:reconcile:lock"
_BATCH = 1000  # rows per transaction and pipeline: fewer round trips, short locks


# A batch of live URLs to restore, each locked with its file row. SKIP LOCKED: a row an API
# transaction holds is that transaction's to write (and waiting could deadlock with one that
# locks the URL row first, as expiry does); the next pass picks it up.
RESTORE_SQL = """SELECT u.id AS url_id, u.token, u.expires_at AS url_expires_at,
                       u.version, f.id, f.bytes, f.sniffed_type, f.sha256,
                       f.object_key, f.created_at
                  FROM public_urls u JOIN files f ON f.id = u.file_id
                 WHERE u.id > $1 AND u.revoked_at IS NULL
                   AND (u.expires_at IS NULL OR u.expires_at > now())
                   AND f.deleted_at IS NULL
                 ORDER BY u.id LIMIT $2
                   FOR SHARE OF f, u SKIP LOCKED"""


def _no_beat() -> None:
    pass


async def _no_pause() -> None:
    pass


@dataclass
class Reconciler:
    res: Resources
    orphan_candidates: set[str] = field(default_factory=set)
    next_sweep: float = 0.0
    beat: Callable[[], None] = _no_beat  # progress, for the worker's heartbeat
    # Awaited between a restore batch's snapshot and its row locks: where a concurrent
    # revoke's commit would do harm. Tests commit one here; in service it does nothing.
    after_snapshot: Callable[[], Awaitable[None]] = _no_pause
    batch_size: int = _BATCH  # rows per transaction and pipeline

    async def redis_was_emptied(self) -> bool:
        """REDIS_URL's Redis, or the token cache's own, lost its data."""
        return not await self.res.redis.exists(EPOCH_KEY) or await self.res.tokens.was_emptied()

    async def run_once(self, *, full: bool) -> dict[str, int]:
        """One pass; `full` also re-creates every job and the consumer group."""
        # Restoring entries, removing dead ones and rescheduling jobs touch different keys
        # (each safe beside the others, as beside other workers): together, the waits of
        # each on PostgreSQL and Redis overlap the others' work.
        steps = [self.restore_cache(), self.remove_dead_entries()]
        if full:
            steps.append(self.reschedule_jobs())
        done = await asyncio.gather(*steps, return_exceptions=True)
        for outcome in done:  # each step ran to its end; the first failure fails the pass
            if isinstance(outcome, BaseException):
                raise outcome
        counts = [n for n in done if isinstance(n, int)]
        stats = {
            "cache_restored": counts[0],
            "cache_removed": counts[1],
            "urls_expired": len(await self.expire_overdue_urls()),
            "files_expired": await self.expire_overdue_files(),
            "objects_finished": await self.finish_lost_deletions(),
        }
        if full or time.monotonic() >= self.next_sweep:
            self.next_sweep = time.monotonic() + self.res.settings.sweep_interval_seconds
            stats["objects_swept"] = await self.sweep_orphans()
            stats["uploads_aborted"] = await self.abort_abandoned_uploads()
            stats |= await retention.sweep(self.res)
        if full:
            await event_consumer.ensure_group(self.res)
            stats["jobs_scheduled"] = counts[2]
        await self.res.redis.set(EPOCH_KEY, str(int(time.time())))
        await self.res.tokens.mark_rebuilt()
        return stats

    async def restore_cache(self) -> int:
        restored = 0
        last_id = 0
        while True:
            self.beat()
            async with unit_of_work(self.res, WORKER) as uow:
                # The statement's snapshot is taken when its portal is bound; its rows are
                # read and locked as they are fetched.
                batch = await uow.conn.cursor(RESTORE_SQL, last_id, self.batch_size)
                await self.after_snapshot()
                rows = await batch.fetch(self.batch_size)
                if not rows:
                    return restored
                last_id = rows[-1]["url_id"]
                wanted = [
                    (
                        r["token"],
                        public_urls.record_for(
                            r, {"expires_at": r["url_expires_at"], "version": r["version"]}
                        ),
                    )
                    for r in rows
                ]
                # Missing entries, and entries in an older record format or with other
                # content: one read and one pipelined write per batch (per node on a cluster).
                restored += await uow.cache_restore(wanted)
            if len(rows) < self.batch_size:
                return restored

    async def remove_dead_entries(self) -> int:
        removed = 0
        seen_orphans: set[str] = set()
        async for batch in self.res.tokens.tokens(_BATCH):
            self.beat()
            rows = await self.res.db.fetch(
                """SELECT token, revoked_at IS NOT NULL
                          OR (expires_at IS NOT NULL AND expires_at <= now()) AS dead
                     FROM public_urls WHERE token = ANY($1::text[])""",
                batch,
            )
            known = {r["token"]: r["dead"] for r in rows}
            doomed = [t for t in batch if known.get(t)]
            for t in batch:
                if t not in known:
                    if t in self.orphan_candidates:
                        doomed.append(t)
                    else:
                        seen_orphans.add(t)
            # No row lock needed: these rows are committed dead, or there is no row.
            await self.res.tokens.delete(*doomed)
            removed += len(doomed)
        self.orphan_candidates = seen_orphans
        return removed

    async def expire_overdue_urls(self) -> list[int]:
        """Mark URLs past their deadline expired (their jobs may be lost); returns the ids
        this pass expired (a job or a create may have got to some first)."""
        rows = await self.res.db.fetch(
            """SELECT id, version FROM public_urls
                WHERE revoked_at IS NULL AND expires_at <= now() LIMIT 1000"""
        )
        expired = []
        for r in rows:
            self.beat()
            if (await public_urls.expire(self.res, r["id"], r["version"])).expired:
                expired.append(r["id"])
        return expired

    async def expire_overdue_files(self) -> int:
        rows = await self.res.db.fetch(
            "SELECT id FROM files WHERE deleted_at IS NULL AND expires_at <= now() LIMIT 1000"
        )
        count = 0
        for r in rows:
            self.beat()
            count += await files.expire_file(self.res, r["id"])
        return count

    async def finish_lost_deletions(self) -> int:
        """Deleted rows whose object is still there a minute later: their event was lost."""
        swept = 0
        pending = await self.res.db.fetch(
            """SELECT id, object_key, team_id, delete_reason FROM files
                WHERE deleted_at IS NOT NULL AND object_deleted_at IS NULL
                  AND deleted_at < now() - interval '1 minute' LIMIT 1000"""
        )
        for r in pending:
            self.beat()
            event = events.FileEvent(
                events.FILE_DELETED,
                r["id"],
                r["object_key"],
                r["team_id"],
                r["delete_reason"] or "deleted",
            )
            await event_consumer.handle(self.res, event)
            swept += 1
        return swept

    async def sweep_orphans(self) -> int:
        """Objects with no row at all, older than the grace period."""
        swept = 0
        cutoff = datetime.now(UTC) - timedelta(seconds=self.res.settings.sweep_grace_seconds)
        batch: list[tuple[str, datetime | None]] = []
        async for key, modified in self.res.storage.list_objects("objects/"):
            batch.append((key, modified))
            if len(batch) >= _BATCH:
                self.beat()
                swept += await self._sweep_batch(batch, cutoff)
                batch = []
        if batch:
            swept += await self._sweep_batch(batch, cutoff)
        return swept

    async def abort_abandoned_uploads(self) -> int:
        """Multipart uploads left open by an API process that died mid-upload. Only those
        older than any live upload can be (its body deadline) and than the sweep's grace:
        an upload under way is never cut."""
        settings = self.res.settings
        age = max(settings.sweep_grace_seconds, settings.upload_body_timeout)
        cutoff = datetime.now(UTC) - timedelta(seconds=age)
        aborted = 0
        for upload in await self.res.storage.open_uploads("objects/"):
            if upload.initiated is not None and upload.initiated < cutoff:
                await self.res.storage.abort_upload(upload)
                log.info("abandoned upload aborted", key=upload.key)
                aborted += 1
        return aborted

    async def _sweep_batch(self, batch: list[tuple[str, datetime | None]], cutoff: datetime) -> int:
        keys = [k for k, modified in batch if modified is not None and modified < cutoff]
        if not keys:
            return 0
        rows = await self.res.db.fetch(
            "SELECT object_key FROM files WHERE object_key = ANY($1::text[])", keys
        )
        with_row = {r["object_key"] for r in rows}
        orphans = [k for k in keys if k not in with_row]
        for k in orphans:
            await self.res.storage.delete(k)
            log.info("orphan object swept", key=k)
        return len(orphans)

    async def reschedule_jobs(self) -> int:
        """After Redis lost its data: a job for every live deadline (ids make it idempotent)."""
        jobs = [
            scheduling.url_expiry(r["id"], r["version"], r["expires_at"])
            for r in await self.res.db.fetch(
                """SELECT id, version, expires_at FROM public_urls
                    WHERE revoked_at IS NULL AND expires_at IS NOT NULL"""
            )
        ]
        jobs += [
            scheduling.file_expiry(r["id"], r["expires_at"])
            for r in await self.res.db.fetch(
                """SELECT id, expires_at FROM files
                    WHERE deleted_at IS NULL AND expires_at IS NOT NULL"""
            )
        ]
        return await scheduling.enqueue_many(self.res.arq, jobs)


async def recorded_pass(reconciler: Reconciler, worker: str, *, full: bool) -> dict[str, int]:
    """One pass, recorded: what it fixed, or why it failed (then raised on)."""
    res = reconciler.res
    started = time.monotonic()
    fixed: dict[str, int] | None = None
    error: str | None = None
    try:
        fixed = await reconciler.run_once(full=full)
        return fixed
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        seconds = time.monotonic() - started
        observed.RECONCILE_RUNS.labels("ok" if error is None else "error").inc()
        observed.RECONCILE_DURATION.observe(seconds)
        if fixed is not None:
            observed.RECONCILE_LAST_SUCCESS.set_to_current_time()
            for kind, n in fixed.items():
                observed.RECONCILE_FIXED.labels(kind).inc(n)
        # Only observed: when Redis is what failed, the record is lost with it.
        with contextlib.suppress(Exception):
            await ops_state.record_reconcile(
                res.redis, worker=worker, seconds=seconds, full=full, fixed=fixed, error=error
            )
            await metrics.add(
                res.redis,
                observed.reconcile_fields(fixed),
                res.settings.metrics_retention_seconds,
            )


async def loop(
    res: Resources, stop: asyncio.Event, beat: Callable[[], None] = _no_beat, worker: str = ""
) -> None:
    """Reconcile every interval; check each second whether Redis came back empty.
    `beat` is called every turn and per batch of a pass (the worker's heartbeat)."""
    reconciler = Reconciler(res, beat=beat)
    interval = res.settings.reconcile_interval
    next_run = 0.0
    first = True
    while not stop.is_set():
        beat()
        try:
            now = asyncio.get_running_loop().time()
            emptied = await reconciler.redis_was_emptied()
            if emptied or now >= next_run:
                # Per-pass lock: several workers need not all do the same work at once.
                if await res.redis.set(LOCK_KEY, "1", nx=True, px=int(interval * 1000)) or emptied:
                    stats = await recorded_pass(reconciler, worker, full=emptied or first)
                    if any(stats.values()):
                        log.info("reconciled", **stats)
                first = False
                next_run = now + interval
        except Exception as exc:
            log_failure(log, "reconcile", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=1.0)
