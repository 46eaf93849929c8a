"""The unit of work: one use case's transaction, and the effects its change causes.

Every use case that changes a file or a public URL (upload, create/update, revoke, delete,
and the worker's expiry jobs, event handler and reconcile) runs as

    async with unit_of_work(res, actor) as uow:
        row = await uow.conn.fetchrow("... FOR UPDATE", ...)  # explicit SQL, our lock order
        await uow.cache_put(token, record)                    # token cache: now, under the lock
        uow.record(Change(...))                               # what changed, and who did it
        uow.publish(event); uow.schedule(job); uow.count(name)  # after commit

Inside the transaction, atomic with the change:
- the rows, written by the use case's own SQL (lock order: team, then file);
- `record`: what changed (kind, file, token, old and new expiry) by whom (the actor). These
  are the audit trail's rows (`audit_events`), inserted by `_write_records` just before
  commit (`shared/audit.py` reads them);
- token-cache writes (`cache_put`, `cache_delete`), which go to Redis at once, before the
  commit and under the file's row lock. A create's entry exists before the API answers (the
  URL works the moment it is returned); a revoke's is gone before the commit (if the commit
  fails, the URL is dead, never alive). They all go through `res.tokens`, which raises
  when the replicas edges read do not confirm a write (having deleted any entry it set):
  the transaction then rolls back, as for any failed write.

After a successful commit, once, in this order (`_after_commit`), most needed first:
1. stream events (`file.deleted`): the worker's consumer deletes the object (lost: the
   reconcile pass finishes deletions still pending after a minute);
2. arq jobs (expiry): the deadline holds without them (Redis TTL, the edge's own check;
   lost: reconcile retires overdue rows and, after a Redis loss, reschedules every job);
3. counters (Redis buckets, Prometheus) and one log line per change and count: only
   observed, never acted on.
A failed effect is logged, naming what catches up, and the rest still run: the change is
committed, so the caller gets its answer. If the body raises, the transaction rolls back
and nothing after commit runs.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import structlog

from shared import events, metrics, scheduling
from shared.actors import Actor
from shared.db import Connection
from shared.resources import Resources
from shared.token_cache import UrlRecord

log = structlog.get_logger(__name__)


class ChangeKind(enum.StrEnum):
    """The lifecycle changes of files and URLs (the audit trail's vocabulary)."""

    FILE_UPLOADED = "file.uploaded"
    FILE_DELETED = "file.deleted"
    FILE_EXPIRED = "file.expired"
    URL_CREATED = "url.created"
    URL_UPDATED = "url.updated"
    URL_REVOKED = "url.revoked"
    URL_EXPIRED = "url.expired"
    URL_REVOKED_WITH_FILE = "url.revoked_with_file"  # the file was deleted or expired


# The per-minute counter each change adds to (`filecdn metrics`); a URL revoked with its
# file is counted by the file's own change.
METRIC: dict[ChangeKind, str | None] = {
    ChangeKind.FILE_UPLOADED: "files.uploaded",
    ChangeKind.FILE_DELETED: "files.deleted",
    ChangeKind.FILE_EXPIRED: "files.expired",
    ChangeKind.URL_CREATED: "url.created",
    ChangeKind.URL_UPDATED: "url.updated",
    ChangeKind.URL_REVOKED: "url.revoked",
    ChangeKind.URL_EXPIRED: "url.expired",
    ChangeKind.URL_REVOKED_WITH_FILE: None,
}


@dataclass(frozen=True, slots=True)
class Change:
    """One lifecycle change, as the audit trail records it (the actor is the unit's)."""

    kind: ChangeKind
    file_id: str
    team_id: int
    token: str | None = None  # the URL's; recorded cut to 4 characters
    old_expires_at: datetime | None = None
    new_expires_at: datetime | None = None


@dataclass
class UnitOfWork:
    res: Resources
    actor: Actor
    conn: Connection
    committed: bool = False  # set once the transaction has committed
    changes: list[Change] = field(default_factory=list)
    _events: list[events.FileEvent] = field(default_factory=list)
    _jobs: list[scheduling.Job] = field(default_factory=list)
    _counts: list[tuple[str, dict[str, object]]] = field(default_factory=list)

    # --- inside the transaction ---------------------------------------------------------

    def record(self, change: Change) -> None:
        """What changed; written in this transaction, counted and logged after it."""
        self.changes.append(change)

    async def cache_put(self, token: str, record: UrlRecord) -> None:
        """Write a token-cache entry now; the caller holds the file's row lock."""
        await self.res.tokens.put(token, record)

    async def cache_restore(self, entries: Sequence[tuple[str, UrlRecord]]) -> int:
        """Write the entries that differ from what is stored (reconcile); the caller holds
        their files' row locks. Returns how many it wrote."""
        return await self.res.tokens.restore(entries)

    async def cache_delete(self, *tokens: str) -> None:
        """Remove token-cache entries now, before commit; the caller holds the row lock."""
        await self.res.tokens.delete(*tokens)

    async def _write_records(self) -> None:
        """The changes' rows in `audit_events`, atomic with the change: the last statement
        of the transaction, so a change that rolls back leaves no trace of itself."""
        if not self.changes:
            return
        actor = self.actor
        await self.conn.executemany(
            """INSERT INTO audit_events (team_id, file_id, kind, actor_kind, actor_key_id,
                                         actor_name, token_prefix, old_expires_at,
                                         new_expires_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
            [
                (
                    c.team_id,
                    c.file_id,
                    c.kind.value,
                    actor.kind,
                    actor.key_id,
                    actor.name,
                    None if c.token is None else c.token[:4],
                    c.old_expires_at,
                    c.new_expires_at,
                )
                for c in self.changes
            ],
        )

    # --- after commit -------------------------------------------------------------------

    def publish(self, event: events.FileEvent) -> None:
        self._events.append(event)

    def schedule(self, job: scheduling.Job) -> None:
        self._jobs.append(job)

    def count(self, metric: str, **log_fields: object) -> None:
        """Count (and log) something that is not itself a lifecycle change."""
        self._counts.append((metric, log_fields))

    async def _after_commit(self) -> None:
        res = self.res
        for event in self._events:
            # The row says "deleted, object pending": reconcile finishes the deletion.
            with _logged("event not published; reconcile will finish it", file_id=event.file_id):
                await events.publish(res.redis, event)
        for job in self._jobs:
            with _logged("job not scheduled; reconcile will schedule it", job_id=job.job_id):
                await scheduling.enqueue(res.arq, job)
        counted = [(METRIC[c.kind], c.kind.value, self._log_fields(c)) for c in self.changes]
        counted += [(metric, metric, fields) for metric, fields in self._counts]
        for metric, event_name, fields in counted:
            if metric is not None:
                with _logged("metrics bucket not updated", metric=metric):
                    await metrics.count(res, metric)
            log.info(event_name, **fields)

    def _log_fields(self, c: Change) -> dict[str, object]:
        fields: dict[str, object] = {"file_id": c.file_id, "actor": self.actor.label}
        if c.token is not None:
            fields["token"] = c.token[:4]
        if c.old_expires_at is not None:
            fields["old_expires_at"] = c.old_expires_at.isoformat()
        if c.new_expires_at is not None:
            fields["expires_at"] = c.new_expires_at.isoformat()
        return fields


@contextlib.contextmanager
def _logged(failure: str, **fields: object) -> Iterator[None]:
    """Around one after-commit effect: a failure is logged (saying what catches up), never
    raised, so the next effect still runs."""
    try:
        yield
    except Exception as exc:
        log.warning(failure, error=str(exc), **fields)


@contextlib.asynccontextmanager
async def unit_of_work(res: Resources, actor: Actor) -> AsyncIterator[UnitOfWork]:
    """One connection and transaction for a use case; its effects run once it commits."""
    async with res.db.acquire() as conn, conn.transaction():
        uow = UnitOfWork(res, actor, conn)
        yield uow
        await uow._write_records()
    uow.committed = True
    await uow._after_commit()  # the connection is back in the pool by now
