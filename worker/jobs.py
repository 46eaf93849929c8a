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


async def expire_public_url(ctx: dict[str, Any], url_id: int, version: int) -> str:
    early = await public_urls.expire(_resources(ctx), url_id, version)
    if early is not None:  # scheduled by a clock slightly ahead of the database's
        raise Retry(defer=max((early - datetime.now(UTC)).total_seconds(), 0.5))
    return "done"


async def expire_file(ctx: dict[str, Any], file_id: str) -> str:
    res = _resources(ctx)
    if await files.expire_file(res, file_id):
        return "expired"
    deadline = await res.db.fetchval(
        "SELECT expires_at FROM files WHERE id = $1 AND deleted_at IS NULL", file_id
    )
    if deadline is not None:  # not yet due
        raise Retry(defer=max((deadline - datetime.now(UTC)).total_seconds(), 0.5))
    return "stale"
