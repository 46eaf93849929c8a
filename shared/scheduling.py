"""The worker's expiry jobs on arq, with deterministic job ids.

A URL's job id carries its version: an update schedules a new job and the old one, when it
runs, finds a newer version and does nothing (arq would also silently drop a second job
with the id of one still queued). A job that is not scheduled is not fatal: the deadline is
enforced by Redis TTL and by the edge, and reconcile reschedules missing jobs. Callers
decide what a failure means (`shared/unit_of_work.py` logs it after commit).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from arq.connections import ArqRedis

EXPIRE_URL = "expire_public_url"
EXPIRE_FILE = "expire_file"


def url_job_id(url_id: int, version: int) -> str:
    return f"url-expiry:{url_id}:{version}"


def file_job_id(file_id: str) -> str:
    return f"file-expiry:{file_id}"


@dataclass(frozen=True, slots=True)
class Job:
    """One deferred arq job: the function's name, its arguments, its id and when it runs."""

    function: str
    args: tuple[int | str, ...]
    job_id: str
    at: datetime


def url_expiry(url_id: int, version: int, at: datetime) -> Job:
    return Job(EXPIRE_URL, (url_id, version), url_job_id(url_id, version), at)


def file_expiry(file_id: str, at: datetime) -> Job:
    return Job(EXPIRE_FILE, (file_id,), file_job_id(file_id), at)


async def enqueue(arq: ArqRedis, job: Job) -> None:
    """Queue the job (a no-op when arq still holds one with its id); RedisError on failure."""
    await arq.enqueue_job(job.function, *job.args, _job_id=job.job_id, _defer_until=job.at)
