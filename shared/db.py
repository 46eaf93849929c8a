"""PostgreSQL access: the pool, and the versioned migrations under `shared/migrations/`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources as importlib_resources
from typing import cast

import asyncpg
import structlog
from asyncpg.pool import PoolConnectionProxy

from shared.errors import Unavailable
from shared.settings import Settings

log = structlog.get_logger(__name__)

# Any constant works; it only has to be the same for every process running migrations.
_MIGRATION_LOCK_KEY = 0x66696C6563646E  # "filecdn"
_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

Pool = asyncpg.Pool
# What `pool.acquire()` hands out, or a plain connection: every query helper accepts both.
Connection = asyncpg.Connection | PoolConnectionProxy
Row = asyncpg.Record


# Statements outside a request (the worker's passes and sweeps, tools) may be long.
BACKGROUND_TIMEOUT = 30.0


class BoundedPool(asyncpg.Pool):
    """asyncpg's pool, but nobody waits for a connection longer than `acquire_timeout`:
    past it the request is refused (503 with Retry-After) instead of stalling every
    caller behind a pool held by slow queries. Every way of getting a connection (the
    pool's own fetch/execute, `acquire()` awaited or in `async with`) goes through
    `_acquire`, asyncpg's one funnel."""

    acquire_timeout: float = 5.0

    async def _acquire(self, timeout: float | None) -> PoolConnectionProxy:  # noqa: ASYNC109
        wait = self.acquire_timeout if timeout is None else timeout
        try:
            got = await super()._acquire(wait)  # type: ignore[misc]  # asyncpg-private
            return cast(PoolConnectionProxy, got)
        except TimeoutError:
            raise Unavailable(
                f"no database connection was free within {wait:g} s; retry later"
            ) from None


def is_statement_timeout(exc: BaseException) -> bool:
    """PostgreSQL cancelled the statement at `statement_timeout` (DB_STATEMENT_TIMEOUT)."""
    return isinstance(exc, asyncpg.QueryCanceledError)


async def create_pool(
    settings: Settings,
    *,
    command_timeout: float = BACKGROUND_TIMEOUT,
    statement_timeout: float | None = None,
) -> asyncpg.Pool:
    """The pool. `command_timeout`: seconds the client waits for a statement's answer (the
    API passes DB_TIMEOUT: a hung server fails a request). `statement_timeout`: the server
    cancels a statement running longer and frees its backend (the API passes
    DB_STATEMENT_TIMEOUT, below DB_TIMEOUT, so a slow query is the server's 503 before the
    client gives up on the server); background pools set none."""
    if not settings.database_url:
        raise RuntimeError("DATABASE_URL is not set")
    pool = BoundedPool(
        settings.database_url,
        min_size=settings.db_pool_min,
        max_size=settings.db_pool_max,
        max_queries=50_000,
        max_inactive_connection_lifetime=300.0,
        loop=None,
        connection_class=asyncpg.Connection,
        record_class=asyncpg.Record,
        server_settings=(
            {"statement_timeout": str(int(statement_timeout * 1000))} if statement_timeout else {}
        ),
        command_timeout=command_timeout,
        timeout=settings.db_connect_timeout,  # connecting
    )
    pool.acquire_timeout = settings.db_acquire_timeout
    await pool
    return pool


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations() -> list[Migration]:
    found = []
    for entry in importlib_resources.files("shared.migrations").iterdir():
        m = _MIGRATION_NAME.match(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), entry.read_text("utf-8")))
    found.sort(key=lambda mig: mig.version)
    versions = [mig.version for mig in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions: {versions}")
    return found


class SchemaOutdated(RuntimeError):
    """The database lacks migrations this code needs: `filecdn migrate` has not run."""


async def check_schema(db: Pool | Connection) -> None:
    """Refuse to start on a schema older than this code: every shipped migration applied.

    A newer schema is fine (migrations keep the previous release working, so a rollback runs
    on it). Compared as sets, so a migration merged with a lower number is not missed.
    """
    shipped = {mig.version for mig in load_migrations()}
    try:
        applied = {r["version"] for r in await db.fetch("SELECT version FROM schema_migrations")}
    except asyncpg.UndefinedTableError:
        applied = set()
    missing = sorted(shipped - applied)
    if missing:
        raise SchemaOutdated(
            f"the database lacks migrations {', '.join(f'{v:04d}' for v in missing)}: "
            "run `filecdn migrate` before starting this version"
        )


async def migrate(dsn: str) -> list[int]:
    """Apply pending migrations, each in its own transaction; safe to run concurrently."""
    conn = await asyncpg.connect(dsn)
    applied_now: list[int] = []
    try:
        # A session-level advisory lock serialises replicas starting at the same time.
        await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK_KEY)
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version integer PRIMARY KEY,
                   name text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for mig in load_migrations():
            if mig.version in done:
                continue
            async with conn.transaction():
                await conn.execute(mig.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    mig.version,
                    mig.name,
                )
            applied_now.append(mig.version)
            log.info("migration applied", version=mig.version, name=mig.name)
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK_KEY)
    finally:
        await conn.close()
    return applied_now
