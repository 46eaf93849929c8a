"""Authentication, the same for REST and gRPC: a bearer key in, the caller out."""

from __future__ import annotations

from shared import teams
from shared.actors import Caller
from shared.db import Pool


def bearer_key(value: str | None) -> str | None:
    """The key of `Bearer <key>` (REST's Authorization header, gRPC's `authorization`
    metadata); None when it is missing or another scheme."""
    scheme, _, key = (value or "").partition(" ")
    return key.strip() if scheme.lower() == "bearer" else None


async def authenticate(db: Pool, authorization: str | None) -> Caller:
    """The caller a request's authorization value names; Unauthenticated otherwise."""
    return await teams.authenticate(db, bearer_key(authorization))
