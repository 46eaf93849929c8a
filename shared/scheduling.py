"""The worker's expiry jobs on arq, with deterministic job ids.

A URL's job id carries its version: an update schedules a new job and the old one, when it
runs, finds a newer version and does nothing (arq would also silently drop a second job
with the id of one still queued). A job that is not scheduled is not fatal: the deadline is
enforced by Redis TTL and by the edge, and reconcile reschedules missing jobs. Callers
decide what a failure means (`shared/unit_of_work.py` logs it after commit).

Payloads are JSON, never pickle (arq's default): the queue holds data, so whoever can write
to Redis can at most queue an expiry check, not run code in the worker, which holds the
database and S3 credentials. Every pool that enqueues and the worker that runs use `queue`'s
serializer pair.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis.asyncio as aioredis
from arq.connections import ArqRedis
from arq.constants import job_key_prefix, result_key_prefix
from arq.jobs import serialize_job
from arq.utils import timestamp_ms, to_unix_ms

EXPIRE_URL = "expire_public_url"
EXPIRE_FILE = "expire_file"


def serialize(data: dict[str, Any]) -> bytes:
    """arq's job and result dicts as JSON. A failed job's result is its exception: stored as
    its type and message (the traceback is in the worker's log)."""
    return json.dumps(data, default=_plain, separators=(",", ":")).encode()


def _plain(value: object) -> str:
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}"
    raise TypeError(f"a job payload holds only JSON values, not {type(value).__name__}")


def deserialize(raw: bytes) -> dict[str, Any]:
    """The inverse of `serialize`; anything else (a pickle, garbage) is refused by arq as a
    job it cannot read, and never executed."""
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("a job payload is a JSON object")
    if isinstance(data.get("a"), list):
        data["a"] = tuple(data["a"])  # arq's job args are a tuple
    return data


def queue(redis: aioredis.Redis, queue_name: str) -> ArqRedis:
    """The job queue over an open Redis client's connection pool (its URL's credentials, TLS
    and timeouts), with JSON payloads."""
    return ArqRedis(
        connection_pool=redis.connection_pool,
        job_serializer=serialize,
        job_deserializer=deserialize,
        default_queue_name=queue_name,
    )


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


async def enqueue_many(arq: ArqRedis, jobs: Sequence[Job], batch: int = 1000) -> int:
    """Queue those of the jobs arq holds no job or result for, in two round trips per batch
    (`enqueue` takes three per job); returns how many it queued. RedisError on failure.

    For reconcile's rescheduling of every deadline after Redis lost its data. Without
    `enqueue_job`'s WATCH, a job that finishes between the check and the write is queued
    again, and then does nothing: the version in its id (or its file's state) is stale.
    """
    queued = 0
    for i in range(0, len(jobs), batch):
        chunk = jobs[i : i + batch]
        pipe = arq.pipeline(transaction=False)
        pipe.mget([job_key_prefix + job.job_id for job in chunk])
        pipe.mget([result_key_prefix + job.job_id for job in chunk])
        held_jobs, held_results = await pipe.execute()
        now = timestamp_ms()
        pipe = arq.pipeline(transaction=False)
        scores: dict[str, int] = {}
        for job, held, result in zip(chunk, held_jobs, held_results, strict=True):
            if held is not None or result is not None:
                continue
            score = scores[job.job_id] = to_unix_ms(job.at)
            payload = serialize_job(
                job.function, job.args, {}, None, now, serializer=arq.job_serializer
            )
            # arq's expiry: a day past the time the job should start.
            pipe.psetex(
                job_key_prefix + job.job_id, max(score - now, 0) + arq.expires_extra_ms, payload
            )
        if scores:
            pipe.zadd(arq.default_queue_name, scores)
            await pipe.execute()
        queued += len(scores)
    return queued
