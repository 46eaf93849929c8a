"""Files: upload, get, list, delete, read. The use cases, not the transport.

A file is visible to its team until it is deleted or its own deadline passes; after that
it answers exactly like an id that never existed. Upload streams to S3 with bounded memory
and inserts the row only once the bytes are stored; anything else aborts the object.
Changes run in a unit of work (`shared/unit_of_work.py`); the checks are `shared/rules.py`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import asyncpg
import structlog

from shared import events, ids, pagination, public_urls, rules, scheduling, sniff
from shared.actors import WORKER, Caller, Team
from shared.errors import InvalidArgument, NotFound, PayloadTooLarge, Unavailable
from shared.filters import compile_filter
from shared.pagination import ListQuery, SortBy
from shared.resources import Resources
from shared.settings import Settings
from shared.storage import ObjectWriter
from shared.unit_of_work import Change, ChangeKind, UnitOfWork, unit_of_work

log = structlog.get_logger(__name__)

SORT_COLUMNS: dict[SortBy, str] = {
    "created_at": "f.created_at",
    "filename": "f.filename",
    "size": "f.bytes",
}
# Without PAGINATION_SECRET, cursors are valid only on the process that issued them; the
# API logs a warning at startup, and `filecdn run` always sets one.
_FALLBACK_SECRET = os.urandom(32)


def cursor_secret(settings: Settings) -> bytes:
    if settings.pagination_secret is None:
        return _FALLBACK_SECRET
    return settings.pagination_secret.get_secret_value().encode()


# The live URL of a file, if any: not revoked and not past its deadline.
_SELECT = """
SELECT f.id, f.team_id, f.filename, f.purpose, f.bytes AS size, f.content_type, f.sniffed_type,
       f.sha256, f.object_key, f.created_at, f.expires_at,
       u.token AS url_token, u.expires_at AS url_expires_at
  FROM files f
  LEFT JOIN public_urls u
         ON u.file_id = f.id AND u.revoked_at IS NULL
        AND (u.expires_at IS NULL OR u.expires_at > now())
"""
_VISIBLE = "f.deleted_at IS NULL AND (f.expires_at IS NULL OR f.expires_at > now())"


@dataclass(frozen=True, slots=True)
class StoredFile:
    id: str
    team_id: int
    filename: str
    purpose: str
    size: int
    content_type: str
    sniffed_type: str | None
    sha256: bytes
    object_key: str
    created_at: datetime
    expires_at: datetime | None
    url_token: str | None
    url_expires_at: datetime | None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> StoredFile:
        return cls(**dict(row))

    @property
    def etag(self) -> str:
        return f'"{self.sha256.hex()[:32]}"'

    def public_url(self, settings: Settings) -> str | None:
        if self.url_token is None:
            return None
        return public_urls.url_for(settings, self.url_token, self.id, self.sniffed_type)


class Upload:
    """One upload in progress: stream with `write`, then `commit` or `abort`.

    The object is written as the bytes arrive (never held whole in memory); the row is
    inserted by `commit`. Until then, and whenever anything fails, `abort` removes every
    trace. Metadata may arrive before or after the bytes (REST allows either order).
    """

    def __init__(
        self, res: Resources, caller: Caller, filename: str | None, declared_type: str | None = None
    ) -> None:
        self._res = res
        self._limits = res.settings.limits
        self._caller = caller
        self.filename = rules.check_filename(filename)
        self._declared_type = declared_type
        # Counted until it is committed or aborted; past the team's or the process's limit
        # the upload is refused here, before a byte is stored (TooManyRequests).
        res.uploads.slots.admit(caller.team.id)
        self._counted = True
        self.file_id = ids.new_file_id()
        self._writer: ObjectWriter = res.storage.writer(
            ids.object_key(self.file_id), res.uploads.memory
        )
        self._head = b""
        self.size = 0
        self._state: Literal["open", "stored", "committed", "aborted"] = "open"
        # With its pair "upload aborted", shows uploads in flight and the ones abandoned.
        log.info("upload started", file_id=self.file_id, actor=caller.actor.label)

    async def write(self, data: bytes) -> None:
        if not data:
            return
        self.size += len(data)
        try:
            rules.check_upload_size(self._limits, self.size)
        except PayloadTooLarge:
            await self.abort()
            raise
        if len(self._head) < sniff.SNIFF_BYTES:
            self._head += data[: sniff.SNIFF_BYTES - len(self._head)]
        try:
            await self._writer.write(data)
        except BaseException:
            await self.abort()  # no memory free in time, S3 failed, or cancelled
            raise

    async def finish_bytes(self) -> None:
        """Complete the object (the body is over); metadata may still follow."""
        if self._state == "open":
            await self._writer.finish()
            self._state = "stored"

    async def commit(self, *, purpose: str = "", expires_after: int | None = None) -> StoredFile:
        """Insert the row (the object is complete by then); on any failure, nothing remains."""
        uow: UnitOfWork | None = None
        try:
            if expires_after is not None:
                rules.check_expires_after(self._limits, expires_after)
            await self.finish_bytes()
            sniffed = sniff.sniff(self._head)
            content_type = sniff.stored_type(sniffed, self._declared_type, self.filename)
            async with unit_of_work(self._res, self._caller.actor) as uow:
                row = await uow.conn.fetchrow(
                    """INSERT INTO files (id, team_id, filename, purpose, bytes, content_type,
                                          sniffed_type, sha256, object_key, expires_at)
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9,
                               date_trunc('second', now() + make_interval(secs => $10::bigint)))
                       RETURNING id, team_id, filename, purpose, bytes AS size, content_type,
                                 sniffed_type, sha256, object_key, created_at, expires_at,
                                 NULL::text AS url_token, NULL::timestamptz AS url_expires_at""",
                    self.file_id,
                    self._caller.team.id,
                    self.filename,
                    purpose or "",
                    self.size,
                    content_type,
                    sniffed,
                    self._writer.sha256(),
                    ids.object_key(self.file_id),
                    expires_after,
                )
                if row is None:
                    raise RuntimeError("INSERT ... RETURNING returned no row")
                stored = StoredFile.from_row(row)
                uow.record(
                    Change(
                        ChangeKind.FILE_UPLOADED,
                        stored.id,
                        stored.team_id,
                        new_expires_at=stored.expires_at,
                    )
                )
                if stored.expires_at is not None:
                    # Not vital: reading already hides an expired file, and reconcile
                    # reschedules a lost job.
                    uow.schedule(scheduling.file_expiry(stored.id, stored.expires_at))
        except BaseException:
            if uow is not None and uow.committed:
                self._state = "committed"  # the row exists: the object is its file now
                self._uncount()
            else:
                await self._discard()
            raise
        self._state = "committed"
        self._uncount()
        return stored

    def _uncount(self) -> None:
        if self._counted:
            self._counted = False
            self._res.uploads.slots.release(self._caller.team.id)

    async def abort(self) -> None:
        """Drop the upload; safe at any point, a no-op once committed."""
        await self._discard()

    async def retract(self) -> None:
        """Undo a commit nobody was told of, as if the upload had never happened.

        grpc.aio ends a cancelled request stream as if it were complete and cancels the
        handler only afterwards, so a client that cancels mid-stream can find us committing.
        It never learns the file's id; unless a URL was made for the file meanwhile (then it
        is somebody's file), its row, its audit rows and its object go.
        """
        if self._state != "committed":
            return
        self._state = "aborted"
        async with self._res.db.acquire() as conn, conn.transaction():
            locked = await conn.fetchval(
                """SELECT id FROM files f WHERE id = $1
                      AND NOT EXISTS (SELECT 1 FROM public_urls u WHERE u.file_id = f.id)
                      FOR UPDATE""",
                self.file_id,
            )
            if locked is None:
                self._state = "committed"
                return
            await conn.execute("DELETE FROM audit_events WHERE file_id = $1", self.file_id)
            await conn.execute("DELETE FROM files WHERE id = $1", self.file_id)
        # A failed delete leaves an object with no row: the sweep removes it after its grace.
        await self._res.storage.delete(self._writer.key)
        log.info("upload aborted", file_id=self.file_id, bytes=self.size, after="commit")

    async def _discard(self) -> None:
        try:
            if self._state == "open":
                self._state = "aborted"
                await self._writer.abort()
            elif self._state == "stored":
                self._state = "aborted"
                await self._res.storage.delete(self._writer.key)
            else:
                return
        finally:
            self._uncount()
        log.info("upload aborted", file_id=self.file_id, bytes=self.size)


async def get_file(res: Resources, team: Team, file_id: str) -> StoredFile:
    ids.check_file_id(file_id)
    row = await res.db.fetchrow(
        f"{_SELECT} WHERE f.id = $1 AND f.team_id = $2 AND {_VISIBLE}", file_id, team.id
    )
    if row is None:
        raise NotFound(f"file {file_id} not found")
    return StoredFile.from_row(row)


@dataclass(frozen=True, slots=True)
class Page:
    files: list[StoredFile]
    next_token: str | None
    has_more: bool


def _sort_value(f: StoredFile, sort_by: str) -> datetime | str | int:
    if sort_by == "filename":
        return f.filename
    return f.size if sort_by == "size" else f.created_at


def list_sql(
    team: Team, q: ListQuery, limit: int, cursor: pagination.Cursor | None
) -> tuple[str, list[Any]]:
    """The list query: whitelisted sort column, compiled filter, keyset on (sort key, id)."""
    params: list[Any] = [team.id, q.purpose]
    filter_sql, filter_params = compile_filter(q.filter or "", first_param=len(params) + 1)
    params += filter_params
    col = SORT_COLUMNS[q.sort_by]
    keyset = "TRUE"
    if cursor is not None:
        cmp = ">" if q.order == "asc" else "<"
        keyset = f"({col}, f.id) {cmp} (${len(params) + 1}, ${len(params) + 2})"
        params += [cursor.sort_value, cursor.file_id]
    direction = "ASC" if q.order == "asc" else "DESC"
    sql = (
        f"{_SELECT} WHERE f.team_id = $1 AND {_VISIBLE}"
        f" AND ($2::text IS NULL OR f.purpose = $2) AND ({filter_sql}) AND {keyset}"
        f" ORDER BY {col} {direction}, f.id {direction} LIMIT {int(limit) + 1}"
    )
    return sql, params


async def list_files(res: Resources, team: Team, q: ListQuery) -> Page:
    settings = res.settings
    limit = pagination.page_size(q, settings.list_limit_max)
    digest = q.digest()
    cursor = await _resolve_cursor(res, team, q, digest)
    sql, params = list_sql(team, q, limit, cursor)
    try:
        rows = await res.db.fetch(sql, *params)
    except asyncpg.QueryCanceledError:  # DB_STATEMENT_TIMEOUT: the server cancelled it
        raise Unavailable(
            f"listing took longer than {settings.db_statement_timeout:g} s and was cancelled;"
            " retry later, or narrow the filter"
        ) from None
    found = [StoredFile.from_row(r) for r in rows]
    has_more = len(found) > limit
    found = found[:limit]
    token = None
    if found:
        last = found[-1]
        token = pagination.encode(
            cursor_secret(settings),
            digest,
            pagination.Cursor(_sort_value(last, q.sort_by), last.id),
        )
    return Page(found, token, has_more)


async def _resolve_cursor(
    res: Resources, team: Team, q: ListQuery, digest: str
) -> pagination.Cursor | None:
    position = q.pagination_token or q.after
    if not position:
        return None
    if not ids.is_file_id(position):
        if q.after and not q.pagination_token:
            raise InvalidArgument("after must be a file id")
        return pagination.decode(cursor_secret(res.settings), digest, position)
    # A bare file id (upstream's token shape, and the openai SDK's `after`).
    row = await res.db.fetchrow(
        f"SELECT f.created_at, f.filename, f.bytes FROM files f"
        f" WHERE f.id = $1 AND f.team_id = $2 AND {_VISIBLE}",
        position,
        team.id,
    )
    if row is None:
        raise InvalidArgument(f"pagination position {position} is not a file of this team")
    value = {"created_at": row["created_at"], "filename": row["filename"], "size": row["bytes"]}
    return pagination.Cursor(value[q.sort_by], position)


async def delete_file(res: Resources, caller: Caller, file_id: str) -> None:
    """Delete a visible file: its URL dies before we return; the object goes via the worker."""
    ids.check_file_id(file_id)
    async with unit_of_work(res, caller.actor) as uow:
        row = await uow.conn.fetchrow(
            f"SELECT f.object_key, f.expires_at FROM files f"
            f" WHERE f.id = $1 AND f.team_id = $2 AND {_VISIBLE} FOR UPDATE",
            file_id,
            caller.team.id,
        )
        if row is None:
            raise NotFound(f"file {file_id} not found")
        await retire_file(uow, file_id, caller.team.id, row, "deleted")


async def expire_file(res: Resources, file_id: str) -> bool:
    """Retire a file whose own deadline has passed (the worker's job); idempotent."""
    async with unit_of_work(res, WORKER) as uow:
        row = await uow.conn.fetchrow(
            """SELECT object_key, team_id, expires_at FROM files
                WHERE id = $1 AND deleted_at IS NULL AND expires_at <= now() FOR UPDATE""",
            file_id,
        )
        if row is None:
            return False
        await retire_file(uow, file_id, row["team_id"], row, "expired")
    return True


async def retire_file(
    uow: UnitOfWork,
    file_id: str,
    team_id: int,
    row: asyncpg.Record,
    reason: Literal["deleted", "expired"],
) -> None:
    """Mark the (locked) file deleted and kill its URL before the transaction commits; the
    worker deletes the object once the commit is announced."""
    await uow.conn.execute(
        "UPDATE files SET deleted_at = now(), delete_reason = $2 WHERE id = $1", file_id, reason
    )
    await public_urls.revoke_locked(uow, file_id, reason="deleted")
    kind = ChangeKind.FILE_DELETED if reason == "deleted" else ChangeKind.FILE_EXPIRED
    uow.record(Change(kind, file_id, team_id, old_expires_at=row["expires_at"]))
    uow.publish(events.FileEvent(events.FILE_DELETED, file_id, row["object_key"], team_id, reason))


async def content_file(res: Resources, team: Team, file_id: str, fmt: str | None) -> StoredFile:
    """The file whose bytes may be read in the given format (original, or text for text/*)."""
    stored = await get_file(res, team, file_id)
    rules.check_content_format(fmt, stored.content_type)
    return stored
