"""arq job functions: URL expiry and file expiry. Each is idempotent and version-checked."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from arq import Retry

from shared import files, public_urls
from shared.resources import Resources


def _resources(ctx: dict[str, Any]) -> Resources:
    res: Resources = ctx["resources"]
    return res


def _retry_at(deadline: datetime) -> Retry:
    # Scheduled by a clock slightly ahead of the database's: run again at the deadline.
    return Retry(defer=max((deadline - datetime.now(UTC)).total_seconds(), 0.5))


async def expire_public_url(ctx: dict[str, Any], url_id: int, version: int) -> str:
    outcome = await public_urls.expire(_resources(ctx), url_id, version)
    if outcome.not_before is not None:
        raise _retry_at(outcome.not_before)
    return "expired" if outcome.expired else "stale"


async def expire_file(ctx: dict[str, Any], file_id: str) -> str:
    res = _resources(ctx)
    if await files.expire_file(res, file_id):
        return "expired"
    deadline = await res.db.fetchval(
        "SELECT expires_at FROM files WHERE id = $1 AND deleted_at IS NULL", file_id
    )
    if deadline is not None:  # not yet due
        raise _retry_at(deadline)
    return "stale"
