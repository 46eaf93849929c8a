"""The `filecdn` command: run the stack or one process, migrate, administer teams and keys."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime
from typing import Any, TypeVar

import click

from cli.files import files
from shared import errors, logs
from shared.settings import Settings

T = TypeVar("T")


def run_async(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    try:
        import uvloop

        return uvloop.run(main())
    except ImportError:
        return asyncio.run(main())


def _settings(process: str) -> Settings:
    settings = Settings()
    logs.configure(settings, process)
    return settings


class _Group(click.Group):
    """Domain errors end the command with their message on one line and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except errors.FilecdnError as exc:
            click.echo(f"error: {exc.message}", err=True)
            sys.exit(1)


@click.group(cls=_Group)
def main() -> None:
    """filecdn: a self-hostable Files API with revocable, expiring public URLs."""


@main.command()
def run() -> None:
    """Run the whole stack in the foreground (embedded servers where no URL is given)."""
    from cli.stack import run_stack

    sys.exit(run_stack())


@main.command()
def migrate() -> None:
    """Apply pending database migrations (idempotent)."""
    from shared import db

    settings = _settings("migrate")
    if not settings.database_url:
        raise click.UsageError("DATABASE_URL is not set")
    dsn = settings.database_url
    applied = run_async(lambda: db.migrate(dsn))
    click.echo(f"applied {applied}" if applied else "schema up to date")


def _refusing_old_schema(serve: Callable[[], object]) -> None:
    """Run a server; on a schema older than the code, one line and exit status 1."""
    from shared.db import SchemaOutdated

    try:
        serve()
    except SchemaOutdated as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


@main.command()
def api() -> None:
    """Serve the REST and gRPC API, and the ops listener (OPS_PORT)."""
    from api.server import serve

    settings = _settings("api")
    _refusing_old_schema(lambda: run_async(lambda: serve(settings)))


@main.command()
@click.option(
    "--check",
    is_flag=True,
    help="Liveness probe: exit 0 if this machine's worker's loops all came round lately "
    "(its /healthz on WORKER_OPS_PORT).",
)
def worker(check: bool) -> None:
    """Run the worker: expiry jobs, file-event consumer, reconcile."""
    from worker import main as worker_main

    if check:
        status, body = worker_main.check(_settings("worker-check"))
        click.echo(body, err=status != 0)
        sys.exit(status)
    settings = _settings("worker")
    _refusing_old_schema(lambda: worker_main.run_worker(settings))


@main.command()
@click.option("--workers", type=int, default=None, help="Processes on one port (SO_REUSEPORT).")
def edge(workers: int | None) -> None:
    """Serve public URLs (GET/HEAD /<token>/<name>)."""
    from cdn_edge.supervisor import run_edge

    settings = _settings("edge")
    run_edge(settings, workers or settings.edge_workers)


@main.command()
@click.option("--minutes", default=15, show_default=True, help="How far back to look.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def metrics(minutes: int, as_json: bool) -> None:
    """Per-minute counters from Redis (uploads, URL changes, deletions, edge traffic).

    One row per field, by family and by numeric bound (histogram buckets `le_5` before
    `le_10`), one column per minute, then the window's total and its rate per second
    (levels, `state.*`, show their last sample instead)."""
    import json
    import time

    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from shared import metrics as counters
    from shared import series
    from shared.redis_client import create_redis

    settings = _settings("metrics")
    if minutes < 1:
        raise click.UsageError("--minutes must be at least 1")
    if not settings.redis_url:
        raise click.UsageError("REDIS_URL is not set (with make run: set -a; . .filecdn/stack.env)")

    async def read() -> dict[int, dict[str, int]]:
        redis = create_redis(settings)
        try:
            return await counters.read(redis, minutes)
        finally:
            await redis.aclose()

    buckets = run_async(read)
    now = time.time()
    seconds = now - counters.minute_starts(minutes, now)[0]
    names = sorted({n for b in buckets.values() for n in b}, key=series.sort_key)
    totals = series.totals(buckets)
    rates = {n: round(series.rate(totals[n], seconds), 4) for n in names if not series.is_state(n)}
    if as_json:
        click.echo(
            json.dumps(
                {
                    "minutes": {
                        str(m): {n: buckets[m][n] for n in names if n in buckets[m]}
                        for m in sorted(buckets)
                    },
                    "totals": {n: totals[n] for n in names},
                    "per_second": rates,
                    "seconds": round(seconds, 3),
                }
            )
        )
        return
    columns = [f"{m // 3600 % 24:02d}:{m // 60 % 60:02d}" for m in sorted(buckets)]
    table = Table()
    table.add_column("metric", no_wrap=True)
    for header in (*columns, "total", "/s"):
        table.add_column(header, justify="right", no_wrap=True)
    for n in names:
        cells = [str(buckets[m].get(n, "")) for m in sorted(buckets)]
        rate = f"{rates[n]:.3g}" if n in rates else "(level)"
        table.add_row(Text(n), *cells, str(totals[n]), rate)
    # Piped, the table keeps its natural width (rich would squeeze it into 80 columns).
    Console(width=None if sys.stdout.isatty() else 100_000).print(table)


@main.group()
def admin() -> None:
    """Teams and API keys (talks to PostgreSQL directly)."""


async def _with_db(fn: Callable[[Any], Awaitable[T]]) -> T:
    from shared import db

    settings = _settings("admin")
    pool = await db.create_pool(settings)
    try:
        return await fn(pool)
    finally:
        await pool.close()


def _created_revoked(created: datetime, revoked: datetime | None) -> tuple[str, str]:
    return f"{created:%Y-%m-%d %H:%M}", f"{revoked:%Y-%m-%d %H:%M}" if revoked else ""


@admin.command("create-team")
@click.argument("name")
def create_team(name: str) -> None:
    from shared import teams

    team = run_async(lambda: _with_db(lambda db: teams.create_team(db, name)))
    click.echo(f"created team {team.name} (id {team.id})")


@admin.command("create-key")
@click.option("--team", "team_name", required=True)
@click.option("--name", default=None, help="Who uses the key; the audit trail shows it.")
def create_key(team_name: str, name: str | None) -> None:
    """Create an API key; prints only the key (store it: it is not shown again)."""
    from shared import teams

    click.echo(run_async(lambda: _with_db(lambda db: teams.create_key(db, team_name, name))))


@admin.command("list-keys")
@click.option("--team", "team_name", default=None)
def list_keys(team_name: str | None) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from shared import teams

    keys = run_async(lambda: _with_db(lambda db: teams.list_keys(db, team_name)))
    table = Table("id", "team", "key prefix", "name", "created", "revoked")
    for k in keys:
        table.add_row(
            str(k.id),
            Text(k.team),  # names are data, never Rich markup
            Text(k.prefix + "…"),
            Text(k.name or ""),
            *_created_revoked(k.created_at, k.revoked_at),
        )
    Console().print(table)


@admin.command("revoke-key")
@click.argument("key_or_id")
def revoke_key(key_or_id: str) -> None:
    """Revoke a key, given in full or by the id list-keys shows."""
    from shared import teams

    info = run_async(lambda: _with_db(lambda db: teams.revoke_key(db, key_or_id)))
    click.echo(f"revoked key {info.id} ({info.prefix}…) of team {info.team}")


@admin.command("create-ops-token")
@click.option("--name", default=None, help="Who or what uses it (shown by list-ops-tokens).")
def create_ops_token(name: str | None) -> None:
    """Create an operator token for the ops dashboard's JSON (`/api/` on OPS_PORT); prints
    only the token (store it: it is not shown again)."""
    from shared import ops_tokens

    click.echo(run_async(lambda: _with_db(lambda db: ops_tokens.create(db, name))))


@admin.command("list-ops-tokens")
def list_ops_tokens() -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from shared import ops_tokens

    tokens = run_async(lambda: _with_db(ops_tokens.list_tokens))
    table = Table("id", "name", "token prefix", "created", "revoked")
    for t in tokens:
        table.add_row(
            str(t.id),
            Text(t.name or ""),
            t.prefix + "…",
            *_created_revoked(t.created_at, t.revoked_at),
        )
    Console().print(table)


@admin.command("revoke-ops-token")
@click.argument("token_or_id")
def revoke_ops_token(token_or_id: str) -> None:
    """Revoke an operator token, given in full or by the id list-ops-tokens shows."""
    from shared import ops_tokens

    t = run_async(lambda: _with_db(lambda db: ops_tokens.revoke(db, token_or_id)))
    click.echo(f"revoked operator token {t.id} ({t.prefix}…)")


main.add_command(files)
