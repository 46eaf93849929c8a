"""Public URLs: create, update, revoke, expire. The rules of files-api.md, in one place.

Concurrency discipline (the invariants of design.md rest on it):
- Every change to a file's URL, and every token-cache write for it, happens inside a
  transaction holding that file's row lock (`FOR UPDATE`; reconcile takes `FOR SHARE`).
  So a cache write can never land after a revoke that followed it.
- Creates also lock the team row first (lock order: team, then file): the active-URL count
  and the insert are serialised per team, so concurrent creates never overshoot the quota.
- The cache entry is written before commit (the URL works the moment it is returned) and
  deleted before commit on revoke/delete (a failure in between leaves the URL dead).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import structlog

from shared import ids, metrics, scheduling, sniff, token_cache
from shared.db import Connection
from shared.errors import InvalidArgument, NotFound, QuotaExceeded
from shared.resources import Resources
from shared.settings import Settings
from shared.teams import Team

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class PublicUrl:
    url: str
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class Revocation:
    file_id: str
    revoked: bool
    url: str | None


def url_for(settings: Settings, token: str, file_id: str, sniffed_type: str | None) -> str:
    ext = sniff.PUBLIC_EXTENSIONS.get(sniffed_type or "", "bin")
    return f"{settings.edge_base_url}/{token}/{file_id}.{ext}"


def record_for(
    file: asyncpg.Record | Mapping[str, Any], token_row: asyncpg.Record | Mapping[str, Any]
) -> token_cache.UrlRecord:
    """The edge's view of a live URL, from its file row and URL row."""
    ext = sniff.PUBLIC_EXTENSIONS[file["sniffed_type"]]
    deadline = token_row["expires_at"]
    return token_cache.UrlRecord(
        file_id=file["id"],
        name=f"{file['id']}.{ext}",
        object_key=file["object_key"],
        content_type=file["sniffed_type"],
        size=file["bytes"],
        etag=f'"{bytes(file["sha256"]).hex()[:32]}"',
        last_modified=int(file["created_at"].timestamp()),
        deadline_ms=None if deadline is None else int(deadline.timestamp() * 1000),
        version=token_row["version"],
    )


def _check_eligible(settings: Settings, file: asyncpg.Record) -> None:
    if file["bytes"] == 0:
        raise InvalidArgument("an empty file cannot be made public")
    if file["sniffed_type"] not in sniff.PUBLIC_EXTENSIONS:
        raise InvalidArgument(
            "only PNG, JPEG, MP4 and PDF files (judged by their content) can be made public; "
            f"this file is {file['content_type']}"
        )
    if file["bytes"] > settings.public_url_max_bytes:
        raise InvalidArgument(
            f"files over {settings.public_url_max_bytes} bytes cannot be made public"
        )


_FILE_FOR_URL = """
SELECT id, team_id, bytes, content_type, sniffed_type, sha256, object_key, created_at,
       expires_at, now() AS now
  FROM files
 WHERE id = $1 AND team_id = $2 AND deleted_at IS NULL
   AND (expires_at IS NULL OR expires_at > now())
   FOR UPDATE
"""
_URL_COLUMNS = "id, token, expires_at, inherited, version"


async def create(res: Resources, team: Team, file_id: str, expires_after: int | None) -> PublicUrl:
    """Create the file's URL, or return the live one (updating its expiry if one is given)."""
    settings = res.settings
    ids.check_file_id(file_id)
    if expires_after is not None:
        lo, hi = settings.expires_after_min, settings.expires_after_max
        if not lo <= expires_after <= hi:
            raise InvalidArgument(
                f"expires_after must be between {lo} and {hi} seconds, got {expires_after}"
            )
    async with res.db.acquire() as conn, conn.transaction():
        # NO KEY: serialises creates per team without blocking the team's uploads (their
        # foreign-key checks take KEY SHARE on the same row).
        await conn.execute("SELECT 1 FROM teams WHERE id = $1 FOR NO KEY UPDATE", team.id)
        file = await conn.fetchrow(_FILE_FOR_URL, file_id, team.id)
        if file is None:
            raise NotFound(f"file {file_id} not found")
        _check_eligible(settings, file)
        now: datetime = file["now"]
        live = await conn.fetchrow(
            f"SELECT {_URL_COLUMNS} FROM public_urls WHERE file_id = $1 AND revoked_at IS NULL",
            file_id,
        )
        if live is not None and live["expires_at"] is not None and live["expires_at"] <= now:
            # Dead by its deadline but not yet marked by the job: a new create gets a new token.
            await _mark_expired(conn, live["id"])
            live = None

        deadline = _deadline(settings, file, now, expires_after)
        if live is None:
            await _check_quota(settings, conn, team)
            row = await conn.fetchrow(
                f"""INSERT INTO public_urls (file_id, team_id, token, expires_at, inherited)
                    VALUES ($1, $2, $3, $4, $5) RETURNING {_URL_COLUMNS}""",
                file_id,
                team.id,
                ids.new_token(),
                deadline,
                expires_after is None and deadline is not None,
            )
            event = "url.created"
        elif expires_after is not None:
            row = await conn.fetchrow(
                f"""UPDATE public_urls SET expires_at = $2, inherited = false,
                           version = version + 1, updated_at = now()
                     WHERE id = $1 RETURNING {_URL_COLUMNS}""",
                live["id"],
                deadline,
            )
            event = "url.updated"
        else:
            row, event = live, ""
        assert row is not None
        # Before commit, under the file lock: the URL serves the moment we answer.
        await token_cache.put(res.redis, row["token"], record_for(file, row))

    if event:
        if row["expires_at"] is not None:
            await scheduling.schedule_url_expiry(res, row["id"], row["version"], row["expires_at"])
        await metrics.count(res, event)
        log.info(event, file_id=file_id, url_id=row["id"], expires_at=row["expires_at"])
    return PublicUrl(
        url_for(settings, row["token"], file_id, file["sniffed_type"]), row["expires_at"]
    )


def _deadline(
    settings: Settings, file: asyncpg.Record, now: datetime, expires_after: int | None
) -> datetime | None:
    file_deadline: datetime | None = file["expires_at"]
    if expires_after is None:
        return file_deadline  # inherited, or indefinite
    # Whole seconds, so that the expires_at we report is exactly when the URL dies.
    deadline = (now + timedelta(seconds=expires_after)).replace(microsecond=0)
    if file_deadline is not None and deadline > file_deadline:
        remaining = int((file_deadline - now).total_seconds())
        raise InvalidArgument(
            f"a public URL cannot outlive its file: expires_after {expires_after} exceeds the "
            f"file's remaining lifetime of {remaining} seconds"
        )
    return deadline


async def _check_quota(settings: Settings, conn: Connection, team: Team) -> None:
    active = await conn.fetchval(
        """SELECT count(*) FROM public_urls
            WHERE team_id = $1 AND revoked_at IS NULL
              AND (expires_at IS NULL OR expires_at > now())""",
        team.id,
    )
    if active >= settings.public_url_quota:
        raise QuotaExceeded(f"active public URL limit ({settings.public_url_quota}) reached")


async def _mark_expired(conn: Connection, url_id: int) -> None:
    await conn.execute(
        """UPDATE public_urls SET revoked_at = expires_at, revoke_reason = 'expired',
                  version = version + 1, updated_at = now()
            WHERE id = $1 AND revoked_at IS NULL""",
        url_id,
    )


async def revoke(res: Resources, team: Team, file_id: str) -> Revocation:
    """Revoke the file's live URL; answers revoked=False when there is nothing to revoke."""
    ids.check_file_id(file_id)
    async with res.db.acquire() as conn, conn.transaction():
        file = await conn.fetchrow(
            "SELECT id, sniffed_type FROM files WHERE id = $1 AND team_id = $2 FOR UPDATE",
            file_id,
            team.id,
        )
        if file is None:  # unknown, or another team's: the same answer, no leak
            return Revocation(file_id, False, None)
        tokens = await revoke_locked(res, conn, file_id, reason="revoked")
    if not tokens:
        return Revocation(file_id, False, None)
    await metrics.count(res, "url.revoked")
    log.info("url.revoked", file_id=file_id)
    return Revocation(
        file_id, True, url_for(res.settings, tokens[0], file_id, file["sniffed_type"])
    )


async def revoke_locked(res: Resources, conn: Connection, file_id: str, reason: str) -> list[str]:
    """Kill the live URL of a file whose row the caller has locked; cache first in effect.

    The row update is not visible until commit, and the cache entry is deleted before it:
    if the delete fails, the transaction rolls back and the URL is unchanged; if the commit
    fails, the URL is already dead.
    """
    rows = await conn.fetch(
        """UPDATE public_urls SET revoked_at = now(), revoke_reason = $2,
                  version = version + 1, updated_at = now()
            WHERE file_id = $1 AND revoked_at IS NULL
              AND (expires_at IS NULL OR expires_at > now())
        RETURNING token""",
        file_id,
        reason,
    )
    tokens = [r["token"] for r in rows]
    await token_cache.delete(res.redis, *tokens)
    return tokens


async def expire(res: Resources, url_id: int, version: int) -> datetime | None:
    """The expiry job: mark the URL expired if this job is current and it is due.

    Returns the deadline if the URL is current but not yet due (the job ran early), so the
    caller can run it again then; None when done or stale.
    """
    async with res.db.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            """SELECT token, expires_at, expires_at <= now() AS due FROM public_urls
                WHERE id = $1 AND version = $2 AND revoked_at IS NULL FOR UPDATE""",
            url_id,
            version,
        )
        if row is None or row["expires_at"] is None:
            return None  # stale: revoked, updated or never expiring
        if not row["due"]:
            deadline: datetime = row["expires_at"]
            return deadline
        await _mark_expired(conn, url_id)
        await token_cache.delete(res.redis, row["token"])  # gone by TTL already; be sure
    await metrics.count(res, "url.expired")
    log.info("url.expired", url_id=url_id)
    return None
