"""Scheduling the worker's expiry jobs on arq, with deterministic job ids.

A URL's job id carries its version: an update schedules a new job and the old one, when it
runs, finds a newer version and does nothing (arq would also silently drop a second job
with the id of one still queued). Failing to schedule is logged, not fatal: the deadline is
enforced by Redis TTL and by the edge, and reconcile reschedules missing jobs.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import structlog
from redis.exceptions import RedisError

if TYPE_CHECKING:
    from shared.resources import Resources

log = structlog.get_logger(__name__)

EXPIRE_URL = "expire_public_url"
EXPIRE_FILE = "expire_file"


def url_job_id(url_id: int, version: int) -> str:
    return f"url-expiry:{url_id}:{version}"


def file_job_id(file_id: str) -> str:
    return f"file-expiry:{file_id}"


async def schedule_url_expiry(res: Resources, url_id: int, version: int, at: datetime) -> bool:
    try:
        await res.arq.enqueue_job(
            EXPIRE_URL, url_id, version, _job_id=url_job_id(url_id, version), _defer_until=at
        )
    except RedisError as exc:
        log.warning("url expiry job not scheduled", url_id=url_id, error=str(exc))
        return False
    return True


async def schedule_file_expiry(res: Resources, file_id: str, at: datetime) -> bool:
    try:
        await res.arq.enqueue_job(
            EXPIRE_FILE, file_id, _job_id=file_job_id(file_id), _defer_until=at
        )
    except RedisError as exc:
        log.warning("file expiry job not scheduled", file_id=file_id, error=str(exc))
        return False
    return True
