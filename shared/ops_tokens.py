"""Operator tokens: who may read the ops listener's JSON (`/api/...`), which shows every
team's traffic and names. A team's API key is a different credential and never works there.

Stored like API keys: a SHA-256 hash (the token carries 256 random bits, so a fast hash is
enough) and a short prefix to recognise it by; the token itself is shown once.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from shared import ids
from shared.errors import InvalidArgument, NotFound, PermissionDenied, Unauthenticated

OPS_TOKEN_PREFIX = "fcops_"
_SHOWN_PREFIX = 12  # "fcops_" and 6 random characters: enough to tell tokens apart


@dataclass(frozen=True, slots=True)
class OpsToken:
    id: int
    prefix: str
    name: str | None
    created_at: datetime
    revoked_at: datetime | None


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _token(r: asyncpg.Record) -> OpsToken:
    return OpsToken(r["id"], r["token_prefix"], r["name"], r["created_at"], r["revoked_at"])


async def create(db: asyncpg.Pool, name: str | None = None) -> str:
    """A new operator token; only its hash is stored."""
    if name is not None and not 1 <= len(name.strip()) <= 200:
        raise InvalidArgument("a token name must be 1..200 characters")
    token = OPS_TOKEN_PREFIX + secrets.token_urlsafe(32)
    await db.execute(
        "INSERT INTO ops_tokens (token_hash, token_prefix, name) VALUES ($1, $2, $3)",
        _hash(token),
        token[:_SHOWN_PREFIX],
        name.strip() if name else None,
    )
    return token


async def list_tokens(db: asyncpg.Pool) -> list[OpsToken]:
    rows = await db.fetch(
        "SELECT id, token_prefix, name, created_at, revoked_at FROM ops_tokens ORDER BY id"
    )
    return [_token(r) for r in rows]


async def revoke(db: asyncpg.Pool, token_or_id: str) -> OpsToken:
    """Revoke by the full token or by the id `list-ops-tokens` shows (idempotent)."""
    token_hash: bytes | None = None
    token_id: int | None = None
    if token_or_id.startswith(OPS_TOKEN_PREFIX):
        token_hash = _hash(token_or_id)
    elif token_or_id.isdigit():
        token_id = int(token_or_id)
    else:
        raise InvalidArgument("give the full token or the numeric id from list-ops-tokens")
    row = await db.fetchrow(
        """UPDATE ops_tokens SET revoked_at = coalesce(revoked_at, now())
            WHERE token_hash = $1 OR id = $2
        RETURNING id, token_prefix, name, created_at, revoked_at""",
        token_hash,
        token_id,
    )
    if row is None:
        raise NotFound("no such operator token")
    return _token(row)


async def authenticate(db: asyncpg.Pool, token: str | None) -> OpsToken:
    """The live operator token presented; Unauthenticated for none or an unknown one,
    PermissionDenied for a team's API key (valid, but not for this)."""
    if not token:
        raise Unauthenticated("missing operator token: send Authorization: Bearer <ops token>")
    row = await db.fetchrow(
        """SELECT id, token_prefix, name, created_at, revoked_at FROM ops_tokens
            WHERE token_hash = $1 AND revoked_at IS NULL""",
        _hash(token),
    )
    if row is not None:
        return _token(row)
    if token.startswith(ids.API_KEY_PREFIX) and await db.fetchval(
        "SELECT 1 FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
        ids.hash_api_key(token),
    ):
        raise PermissionDenied("a team's API key cannot read the operators' API: use an ops token")
    raise Unauthenticated("invalid or revoked operator token")
