"""A process refuses to start on a schema older than its code (`db.check_schema`), so that in
a rollout new code never serves before `filecdn migrate` has run; a newer schema is fine."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from cli.embedded import free_port
from shared import db
from tests.conftest import Stack


@pytest.fixture
async def empty_database(stack: Stack) -> AsyncIterator[str]:
    """A new, empty database on the suite's PostgreSQL; its DSN."""
    name = f"schema_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(stack.env["DATABASE_URL"])
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        dsn = stack.env["DATABASE_URL"].rsplit("/", 1)[0] + f"/{name}"
        yield dsn
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_an_unmigrated_database_is_refused_until_migrate_runs(empty_database: str) -> None:
    conn = await asyncpg.connect(empty_database)
    try:
        with pytest.raises(
            db.SchemaOutdated, match=r"lacks migrations 0001, 0002.*filecdn migrate"
        ):
            await db.check_schema(conn)
        await db.migrate(empty_database)
        await db.check_schema(conn)
    finally:
        await conn.close()


async def test_a_missing_middle_migration_is_refused_and_a_newer_schema_is_not(
    empty_database: str,
) -> None:
    await db.migrate(empty_database)
    conn = await asyncpg.connect(empty_database)
    try:
        await conn.execute("INSERT INTO schema_migrations (version, name) VALUES (9999, 'later')")
        await db.check_schema(conn)  # a rollback runs on the newer schema
        await conn.execute("DELETE FROM schema_migrations WHERE version = 1")
        with pytest.raises(db.SchemaOutdated, match="lacks migrations 0001:"):
            await db.check_schema(conn)
    finally:
        await conn.close()


@pytest.mark.parametrize("process", ["api", "worker"])
async def test_a_process_on_an_unmigrated_database_exits_with_one_line(
    stack: Stack, empty_database: str, process: str
) -> None:
    env = {
        **stack.env,
        "DATABASE_URL": empty_database,
        **{
            name: str(free_port())
            for name in ("API_PORT", "GRPC_PORT", "OPS_PORT", "WORKER_OPS_PORT")
        },
    }
    done = subprocess.run(
        [sys.executable, "-m", "cli", process],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert re.fullmatch(
        r"error: the database lacks migrations 0001, .*: run `filecdn migrate` before .*", last
    ), done.stderr
