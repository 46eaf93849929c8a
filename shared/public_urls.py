"""Public URLs: create, update, revoke, expire. The rules of files-api.md, in one place.

Concurrency discipline (the invariants of design.md rest on it):
- Every change to a file's URL, and every token-cache write for it, happens inside a
  transaction holding that file's row lock (`FOR UPDATE`; reconcile takes `FOR SHARE`).
  So a cache write can never land after a revoke that followed it.
- Creates also lock the team row first (lock order: team, then file): the active-URL count
  and the insert are serialised per team, so concurrent creates never overshoot the quota.
- The cache entry is written before commit (the URL works the moment it is returned) and
  deleted before commit on revoke/delete (a failure in between leaves the URL dead).
- Each use case runs in a unit of work (`shared/unit_of_work.py`): it records what changed
  and by whom, and the unit runs the jobs, counters and log lines once the change commits.
The rules themselves (eligibility, deadlines, quota) are pure functions in `shared/rules.py`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import asyncpg

from shared import ids, rules, scheduling, sniff, token_cache
from shared.actors import WORKER, Caller, Team
from shared.db import Connection
from shared.errors import NotFound
from shared.resources import Resources
from shared.settings import Settings
from shared.unit_of_work import Change, ChangeKind, UnitOfWork, unit_of_work


@dataclass(frozen=True, slots=True)
class PublicUrl:
    url: str
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class UrlStats:
    """A file's live URL and what the edges served through it (folded by the worker)."""

    file_id: str
    url: str
    expires_at: datetime | None
    created_at: datetime
    hits: int
    bytes_sent: int
    last_accessed_at: datetime | None


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


_FILE_FOR_URL = """
SELECT id, team_id, bytes, content_type, sniffed_type, sha256, object_key, created_at,
       expires_at, now() AS now
  FROM files
 WHERE id = $1 AND team_id = $2 AND deleted_at IS NULL
   AND (expires_at IS NULL OR expires_at > now())
   FOR UPDATE
"""
_URL_COLUMNS = "id, token, expires_at, inherited, version"


async def create(
    res: Resources, caller: Caller, file_id: str, expires_after: int | None
) -> PublicUrl:
    """Create the file's URL, or return the live one (updating its expiry if one is given)."""
    limits = res.settings.limits
    team_id = caller.team.id
    ids.check_file_id(file_id)
    if expires_after is not None:
        rules.check_expires_after(limits, expires_after)
    async with unit_of_work(res, caller.actor) as uow:
        conn = uow.conn
        # NO KEY: serialises creates per team without blocking the team's uploads (their
        # foreign-key checks take KEY SHARE on the same row).
        await conn.execute("SELECT 1 FROM teams WHERE id = $1 FOR NO KEY UPDATE", team_id)
        file = await conn.fetchrow(_FILE_FOR_URL, file_id, team_id)
        if file is None:
            raise NotFound(f"file {file_id} not found")
        rules.check_shareable(
            limits,
            rules.ShareableFile(
                file["bytes"], file["sniffed_type"], file["content_type"], file["expires_at"]
            ),
        )
        now: datetime = file["now"]
        live = await conn.fetchrow(
            f"SELECT {_URL_COLUMNS} FROM public_urls WHERE file_id = $1 AND revoked_at IS NULL",
            file_id,
        )
        if live is not None and rules.is_past(live["expires_at"], now):
            # Dead by its deadline but not yet marked by the job: a new create gets a new token.
            await _mark_expired(conn, live["id"])
            uow.record(
                Change(
                    ChangeKind.URL_EXPIRED,
                    file_id,
                    team_id,
                    token=live["token"],
                    old_expires_at=live["expires_at"],
                )
            )
            live = None

        deadline = rules.url_deadline(file["expires_at"], now, expires_after)
        if live is None:
            active = await conn.fetchval(
                """SELECT count(*) FROM public_urls
                    WHERE team_id = $1 AND revoked_at IS NULL
                      AND (expires_at IS NULL OR expires_at > now())""",
                team_id,
            )
            rules.check_quota(limits, active)
            row = await conn.fetchrow(
                f"""INSERT INTO public_urls (file_id, team_id, token, expires_at, inherited)
                    VALUES ($1, $2, $3, $4, $5) RETURNING {_URL_COLUMNS}""",
                file_id,
                team_id,
                ids.new_token(),
                deadline,
                expires_after is None and deadline is not None,
            )
            kind: ChangeKind | None = ChangeKind.URL_CREATED
            previous = None
        elif expires_after is not None:
            row = await conn.fetchrow(
                f"""UPDATE public_urls SET expires_at = $2, inherited = false,
                           version = version + 1, updated_at = now()
                     WHERE id = $1 RETURNING {_URL_COLUMNS}""",
                live["id"],
                deadline,
            )
            kind, previous = ChangeKind.URL_UPDATED, live["expires_at"]
        else:
            row, kind, previous = live, None, None
        if row is None:
            raise RuntimeError(f"public URL of {file_id} vanished under its row lock")
        if kind is not None:
            uow.record(Change(kind, file_id, team_id, row["token"], previous, row["expires_at"]))
            if row["expires_at"] is not None:
                uow.schedule(scheduling.url_expiry(row["id"], row["version"], row["expires_at"]))
        # Before commit, under the file lock: the URL serves the moment we answer.
        await uow.cache_put(row["token"], record_for(file, row))
    return PublicUrl(
        url_for(res.settings, row["token"], file_id, file["sniffed_type"]), row["expires_at"]
    )


async def current(res: Resources, team: Team, file_id: str) -> UrlStats:
    """The file's live URL with its counts; one NotFound for every reason there is none
    (no URL, revoked, expired, file gone, unknown, another team's)."""
    ids.check_file_id(file_id)
    row = await res.db.fetchrow(
        """SELECT u.token, u.expires_at, u.created_at, u.hits, u.bytes_sent,
                  u.last_accessed_at, f.sniffed_type
             FROM files f
             JOIN public_urls u ON u.file_id = f.id AND u.revoked_at IS NULL
                               AND (u.expires_at IS NULL OR u.expires_at > now())
            WHERE f.id = $1 AND f.team_id = $2 AND f.deleted_at IS NULL
              AND (f.expires_at IS NULL OR f.expires_at > now())""",
        file_id,
        team.id,
    )
    if row is None:
        raise NotFound(f"file {file_id} has no public URL")
    return UrlStats(
        file_id=file_id,
        url=url_for(res.settings, row["token"], file_id, row["sniffed_type"]),
        expires_at=row["expires_at"],
        created_at=row["created_at"],
        hits=row["hits"],
        bytes_sent=row["bytes_sent"],
        last_accessed_at=row["last_accessed_at"],
    )


async def _mark_expired(conn: Connection, url_id: int) -> None:
    await conn.execute(
        """UPDATE public_urls SET revoked_at = expires_at, revoke_reason = 'expired',
                  version = version + 1, updated_at = now()
            WHERE id = $1 AND revoked_at IS NULL""",
        url_id,
    )


async def revoke(res: Resources, caller: Caller, file_id: str) -> Revocation:
    """Revoke the file's live URL; answers revoked=False when there is nothing to revoke."""
    ids.check_file_id(file_id)
    async with unit_of_work(res, caller.actor) as uow:
        file = await uow.conn.fetchrow(
            "SELECT id, sniffed_type FROM files WHERE id = $1 AND team_id = $2 FOR UPDATE",
            file_id,
            caller.team.id,
        )
        if file is None:  # unknown, or another team's: the same answer, no leak
            return Revocation(file_id, False, None)
        tokens = await revoke_locked(uow, file_id, reason="revoked")
    if not tokens:
        return Revocation(file_id, False, None)
    return Revocation(
        file_id, True, url_for(res.settings, tokens[0], file_id, file["sniffed_type"])
    )


async def revoke_locked(
    uow: UnitOfWork, file_id: str, reason: Literal["revoked", "deleted"]
) -> list[str]:
    """Kill the live URL of a file whose row the caller has locked; cache first in effect.

    The row update is not visible until commit, and the cache entry is deleted before it:
    if the delete fails, the transaction rolls back and the URL is unchanged; if the commit
    fails, the URL is already dead. `deleted`: the file itself is going (deleted or expired).
    """
    rows = await uow.conn.fetch(
        """UPDATE public_urls SET revoked_at = now(), revoke_reason = $2,
                  version = version + 1, updated_at = now()
            WHERE file_id = $1 AND revoked_at IS NULL
              AND (expires_at IS NULL OR expires_at > now())
        RETURNING token, team_id, expires_at""",
        file_id,
        reason,
    )
    kind = ChangeKind.URL_REVOKED if reason == "revoked" else ChangeKind.URL_REVOKED_WITH_FILE
    for r in rows:
        uow.record(
            Change(kind, file_id, r["team_id"], token=r["token"], old_expires_at=r["expires_at"])
        )
    tokens = [r["token"] for r in rows]
    await uow.cache_delete(*tokens)
    return tokens


@dataclass(frozen=True, slots=True)
class UrlExpiry:
    """What the expiry job found: `expired` when this call expired the URL; `not_before`
    when the URL is current but not yet due (the job ran early); neither when stale."""

    expired: bool = False
    not_before: datetime | None = None


async def expire(res: Resources, url_id: int, version: int) -> UrlExpiry:
    """The expiry job: mark the URL expired if this job is current and it is due."""
    async with unit_of_work(res, WORKER) as uow:
        row = await uow.conn.fetchrow(
            """SELECT token, file_id, team_id, expires_at, expires_at <= now() AS due
                 FROM public_urls
                WHERE id = $1 AND version = $2 AND revoked_at IS NULL FOR UPDATE""",
            url_id,
            version,
        )
        if row is None or row["expires_at"] is None:
            return UrlExpiry()  # stale: revoked, updated or never expiring
        if not row["due"]:
            return UrlExpiry(not_before=row["expires_at"])
        await _mark_expired(uow.conn, url_id)
        uow.record(
            Change(
                ChangeKind.URL_EXPIRED,
                row["file_id"],
                row["team_id"],
                token=row["token"],
                old_expires_at=row["expires_at"],
            )
        )
        await uow.cache_delete(row["token"])  # gone by TTL already; be sure
    return UrlExpiry(expired=True)
