"""Teams and their API keys: the unit of ownership and of authentication."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from shared import ids
from shared.actors import Actor, Caller, Team
from shared.errors import InvalidArgument, NotFound, Unauthenticated

# Team lives with the other plain identities; it is named here too, beside its queries.
__all__ = [
    "KeyInfo",
    "Team",
    "authenticate",
    "check_key_name",
    "create_key",
    "create_team",
    "get_team",
    "list_keys",
    "revoke_key",
]


@dataclass(frozen=True, slots=True)
class KeyInfo:
    id: int
    team: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None
    name: str | None = None


async def create_team(db: asyncpg.Pool, name: str) -> Team:
    name = name.strip()
    if not name or len(name) > 200:
        raise InvalidArgument("team name must be 1..200 characters")
    row = await db.fetchrow(
        "INSERT INTO teams (name) VALUES ($1) ON CONFLICT (name) DO NOTHING RETURNING id, name",
        name,
    )
    if row is None:
        raise InvalidArgument(f"team {name!r} already exists")
    return Team(row["id"], row["name"])


async def get_team(db: asyncpg.Pool, name: str) -> Team:
    row = await db.fetchrow("SELECT id, name FROM teams WHERE name = $1", name)
    if row is None:
        raise NotFound(f"no team named {name!r}")
    return Team(row["id"], row["name"])


def check_key_name(name: str | None) -> str | None:
    """A key's optional name (shown in the audit trail): 1..200 characters once trimmed."""
    if name is None:
        return None
    name = name.strip()
    if not name or len(name) > 200:
        raise InvalidArgument("key name must be 1..200 characters")
    return name


async def create_key(db: asyncpg.Pool, team_name: str, name: str | None = None) -> str:
    """Create an API key for the team and return it; only its hash is stored."""
    name = check_key_name(name)
    team = await get_team(db, team_name)
    key = ids.new_api_key()
    await db.execute(
        "INSERT INTO api_keys (team_id, key_hash, key_prefix, name) VALUES ($1, $2, $3, $4)",
        team.id,
        ids.hash_api_key(key),
        key[:12],
        name,
    )
    return key


async def list_keys(db: asyncpg.Pool, team_name: str | None = None) -> list[KeyInfo]:
    rows = await db.fetch(
        """SELECT k.id, t.name, k.key_prefix, k.created_at, k.revoked_at, k.name AS key_name
             FROM api_keys k JOIN teams t ON t.id = k.team_id
            WHERE $1::text IS NULL OR t.name = $1
            ORDER BY t.name, k.id""",
        team_name,
    )
    return [
        KeyInfo(
            r["id"], r["name"], r["key_prefix"], r["created_at"], r["revoked_at"], r["key_name"]
        )
        for r in rows
    ]


async def revoke_key(db: asyncpg.Pool, key_or_id: str) -> KeyInfo:
    """Revoke by the full key or by the id `list-keys` shows."""
    if key_or_id.startswith(ids.API_KEY_PREFIX):
        key_id = await db.fetchval(
            "SELECT id FROM api_keys WHERE key_hash = $1", ids.hash_api_key(key_or_id)
        )
    elif key_or_id.isdigit():
        key_id = int(key_or_id)
    else:
        raise InvalidArgument("give the full key or the numeric id from list-keys")
    row = await db.fetchrow(
        """UPDATE api_keys k SET revoked_at = coalesce(k.revoked_at, now())
             FROM teams t
            WHERE k.id = $1 AND t.id = k.team_id
        RETURNING k.id, t.name, k.key_prefix, k.created_at, k.revoked_at, k.name AS key_name""",
        key_id,
    )
    if row is None:
        raise NotFound("no such API key")
    return KeyInfo(
        row["id"], row["name"], row["key_prefix"], row["created_at"], row["revoked_at"],
        row["key_name"],
    )  # fmt: skip


async def authenticate(db: asyncpg.Pool, key: str | None) -> Caller:
    """The team owning a live key, and the key as the actor; the same error for missing,
    unknown and revoked keys."""
    if not key:
        raise Unauthenticated("missing API key: send Authorization: Bearer <key>")
    row = await db.fetchrow(
        """SELECT t.id, t.name, k.id AS key_id, k.key_prefix, k.name AS key_name
             FROM api_keys k JOIN teams t ON t.id = k.team_id
            WHERE k.key_hash = $1 AND k.revoked_at IS NULL""",
        ids.hash_api_key(key),
    )
    if row is None:
        raise Unauthenticated("invalid or revoked API key")
    actor = Actor.api_key(row["key_id"], row["key_prefix"], row["key_name"])
    return Caller(Team(row["id"], row["name"]), actor)
