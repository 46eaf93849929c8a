"""Files: upload, get, list, delete, read. The rules, not the transport.

A file is visible to its team until it is deleted or its own deadline passes; after that
it answers exactly like an id that never existed. Upload streams to S3 with bounded memory
and inserts the row only once the bytes are stored; anything else aborts the object.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeGuard, get_args

import asyncpg
import structlog

from shared import events, ids, metrics, pagination, public_urls, scheduling, sniff
from shared.db import Connection
from shared.errors import FailedPrecondition, InvalidArgument, NotFound, PayloadTooLarge
from shared.filters import compile_filter
from shared.resources import Resources
from shared.settings import Settings
from shared.storage import ObjectWriter
from shared.teams import Team

log = structlog.get_logger(__name__)

SortBy = Literal["created_at", "filename", "size"]
Order = Literal["asc", "desc"]
SORT_COLUMNS: dict[str, str] = {
    "created_at": "f.created_at",
    "filename": "f.filename",
    "size": "f.bytes",
}
_MAX_FILENAME = 1024


def is_order(value: str) -> TypeGuard[Order]:
    """True for a valid list order; lets a transport hand a checked string to `ListQuery`."""
    return value in get_args(Order)


def is_sort_by(value: str) -> TypeGuard[SortBy]:
    """True for a valid sort key (one with a whitelisted column)."""
    return value in SORT_COLUMNS


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


def check_expires_after(settings: Settings, seconds: int) -> int:
    """The contract's range for file and URL lifetimes (3600..2592000 by default)."""
    lo, hi = settings.expires_after_min, settings.expires_after_max
    if not lo <= seconds <= hi:
        raise InvalidArgument(f"expires_after must be between {lo} and {hi} seconds, got {seconds}")
    return seconds


def check_filename(name: str | None) -> str:
    name = (name or "").strip()
    if not name:
        raise InvalidArgument("the file needs a name")
    if len(name) > _MAX_FILENAME or any(ord(c) < 32 for c in name):
        raise InvalidArgument(
            "file name must be at most 1024 characters, without control characters"
        )
    return name


class Upload:
    """One upload in progress: stream with `write`, then `commit` or `abort`.

    The object is written as the bytes arrive (never held whole in memory); the row is
    inserted by `commit`. Until then, and whenever anything fails, `abort` removes every
    trace. Metadata may arrive before or after the bytes (REST allows either order).
    """

    def __init__(
        self, res: Resources, team: Team, filename: str | None, declared_type: str | None = None
    ) -> None:
        self._res = res
        self._team = team
        self.filename = check_filename(filename)
        self._declared_type = declared_type
        self.file_id = ids.new_file_id()
        self._writer: ObjectWriter = res.storage.writer(ids.object_key(self.file_id))
        self._hash = hashlib.sha256()
        self._head = b""
        self.size = 0
        self._state: Literal["open", "stored", "committed", "aborted"] = "open"

    async def write(self, data: bytes) -> None:
        if not data:
            return
        self.size += len(data)
        if self.size > self._res.settings.max_upload_bytes:
            await self.abort()
            limit = self._res.settings.max_upload_bytes
            raise PayloadTooLarge(f"file exceeds the maximum upload size of {limit} bytes")
        if len(self._head) < sniff.SNIFF_BYTES:
            self._head += data[: sniff.SNIFF_BYTES - len(self._head)]
        self._hash.update(data)
        await self._writer.write(data)

    async def finish_bytes(self) -> None:
        """Complete the object (the body is over); metadata may still follow."""
        if self._state == "open":
            await self._writer.finish()
            self._state = "stored"

    async def commit(self, *, purpose: str = "", expires_after: int | None = None) -> StoredFile:
        settings = self._res.settings
        try:
            if expires_after is not None:
                check_expires_after(settings, expires_after)
            await self.finish_bytes()
            sniffed = sniff.sniff(self._head)
            content_type = sniff.stored_type(sniffed, self._declared_type, self.filename)
            row = await self._res.db.fetchrow(
                """INSERT INTO files (id, team_id, filename, purpose, bytes, content_type,
                                      sniffed_type, sha256, object_key, expires_at)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9,
                           date_trunc('second', now() + make_interval(secs => $10::bigint)))
                   RETURNING id, team_id, filename, purpose, bytes AS size, content_type,
                             sniffed_type, sha256, object_key, created_at, expires_at,
                             NULL::text AS url_token, NULL::timestamptz AS url_expires_at""",
                self.file_id,
                self._team.id,
                self.filename,
                purpose or "",
                self.size,
                content_type,
                sniffed,
                self._hash.digest(),
                ids.object_key(self.file_id),
                expires_after,
            )
        except BaseException:
            await self._discard()
            raise
        assert row is not None
        self._state = "committed"
        stored = StoredFile.from_row(row)
        if stored.expires_at is not None:
            # Not fatal: reading already hides an expired file, and reconcile reschedules.
            await scheduling.schedule_file_expiry(self._res, stored.id, stored.expires_at)
        await metrics.count(self._res, "files.uploaded")
        log.info("file uploaded", file_id=stored.id, bytes=stored.size, type=content_type)
        return stored

    async def abort(self) -> None:
        """Drop the upload; safe at any point, a no-op once committed."""
        await self._discard()

    async def _discard(self) -> None:
        if self._state == "open":
            self._state = "aborted"
            await self._writer.abort()
        elif self._state == "stored":
            self._state = "aborted"
            await self._res.storage.delete(self._writer.key)


async def get_file(res: Resources, team: Team, file_id: str) -> StoredFile:
    ids.check_file_id(file_id)
    row = await res.db.fetchrow(
        f"{_SELECT} WHERE f.id = $1 AND f.team_id = $2 AND {_VISIBLE}", file_id, team.id
    )
    if row is None:
        raise NotFound(f"file {file_id} not found")
    return StoredFile.from_row(row)


@dataclass(frozen=True, slots=True)
class ListQuery:
    limit: int = 100
    order: Order = "desc"
    sort_by: SortBy = "created_at"
    filter: str | None = None
    purpose: str | None = None
    pagination_token: str | None = None
    after: str | None = None  # a file id (the openai SDK's cursor)


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
    if q.limit < 1:
        raise InvalidArgument("limit must be at least 1")
    limit = min(q.limit, settings.list_limit_max)
    if q.order not in ("asc", "desc"):
        raise InvalidArgument(f"order must be asc or desc, got {q.order!r}")
    if q.sort_by not in SORT_COLUMNS:
        raise InvalidArgument(
            f"sort_by must be one of created_at, filename, size, got {q.sort_by!r}"
        )
    digest = pagination.query_digest(q.sort_by, q.order, q.filter, q.purpose)
    cursor = await _resolve_cursor(res, team, q, digest)
    sql, params = list_sql(team, q, limit, cursor)
    found = [StoredFile.from_row(r) for r in await res.db.fetch(sql, *params)]
    has_more = len(found) > limit
    found = found[:limit]
    token = None
    if found:
        last = found[-1]
        token = pagination.encode(
            pagination.secret(settings),
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
        return pagination.decode(pagination.secret(res.settings), digest, position)
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


async def delete_file(res: Resources, team: Team, file_id: str) -> None:
    """Delete a visible file: its URL dies before we return; the object goes via the worker."""
    ids.check_file_id(file_id)
    async with res.db.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            f"SELECT f.object_key FROM files f WHERE f.id = $1 AND f.team_id = $2 AND {_VISIBLE}"
            " FOR UPDATE",
            file_id,
            team.id,
        )
        if row is None:
            raise NotFound(f"file {file_id} not found")
        await retire_file(res, conn, file_id, "deleted")
    await _announce_deletion(res, file_id, row["object_key"], team.id, "deleted")


async def expire_file(res: Resources, file_id: str) -> bool:
    """Retire a file whose own deadline has passed (the worker's job); idempotent."""
    async with res.db.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            """SELECT object_key, team_id FROM files
                WHERE id = $1 AND deleted_at IS NULL AND expires_at <= now() FOR UPDATE""",
            file_id,
        )
        if row is None:
            return False
        await retire_file(res, conn, file_id, "expired")
    await _announce_deletion(res, file_id, row["object_key"], row["team_id"], "expired")
    return True


async def retire_file(res: Resources, conn: Connection, file_id: str, reason: str) -> None:
    """Mark the (locked) file deleted and kill its URL before the transaction commits."""
    await conn.execute(
        "UPDATE files SET deleted_at = now(), delete_reason = $2 WHERE id = $1", file_id, reason
    )
    await public_urls.revoke_locked(res, conn, file_id, reason="deleted")


async def _announce_deletion(
    res: Resources, file_id: str, object_key: str, team_id: int, reason: str
) -> None:
    await metrics.count(res, f"files.{reason}")
    try:
        await events.publish(
            res.redis, events.FileEvent(events.FILE_DELETED, file_id, object_key, team_id, reason)
        )
    except Exception:
        # The row says "deleted, object pending": the worker's sweep removes the object.
        log.warning("file.deleted event not published; the sweep will catch up", file_id=file_id)


async def content_file(res: Resources, team: Team, file_id: str, fmt: str | None) -> StoredFile:
    """The file whose bytes may be read in the given format (original, or text for text/*)."""
    stored = await get_file(res, team, file_id)
    if fmt not in (None, "", "original", "text"):
        raise InvalidArgument("format must be original or text")
    if fmt == "text" and not stored.content_type.startswith("text/"):
        raise FailedPrecondition("format=text is only available for text/* files")
    return stored
