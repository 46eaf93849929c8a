"""`filecdn run`: the whole stack on one machine, in the foreground, under one supervisor.

Embedded PostgreSQL, Valkey and SeaweedFS are started where DATABASE_URL, REDIS_URL or
S3_ENDPOINT are unset; then migrations, a demo team and key, and the three processes.
Ctrl-C (or any child dying) stops everything we started; the watchdog covers our own death.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shlex
import signal
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.text import Text

from cli.embedded import Supervisor, start_missing, tcp_open, wait_until
from shared import db, ops_tokens, teams
from shared.logs import without_url_passwords
from shared.settings import Settings

console = Console(stderr=True)
DEMO_TEAM = "demo"


def write_private(path: Path, text: str) -> None:
    """Replace `path` with `text`, mode 0600 from the file's creation (a new file beside it,
    created exclusively with that mode, then renamed over the old one)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def persistent_secret(data_dir: Path, name: str) -> str:
    """A random secret kept under DATA_DIR so that it survives restarts."""
    path = data_dir / name
    if path.exists():
        return path.read_text().strip()
    value = secrets.token_urlsafe(32)
    write_private(path, value)
    return value


def stack_environment(
    sup: Supervisor, data_dir: Path, base: dict[str, str], *, test_mode: bool = False
) -> dict[str, str]:
    """The environment every process of the stack gets: base + embedded servers + secrets."""
    env = dict(base)
    env.update(start_missing(sup, data_dir, env, test_mode=test_mode).env)
    env.setdefault("PAGINATION_SECRET", persistent_secret(data_dir, "pagination-secret"))
    env.setdefault("DATA_DIR", str(data_dir))
    return env


def write_stack_env(path: Path, env: dict[str, str]) -> None:
    """The running stack's settings as a shell file, so that another process can join it:
    `set -a; . .filecdn/stack.env; EDGE_PORT=8081 EDGE_OPS_PORT=8092 filecdn edge`.

    It holds credentials: the file is 0600 from its first byte (written beside, then renamed).
    """
    known = {name.upper() for name in Settings.model_fields}
    lines = [f"{k}={shlex.quote(v)}\n" for k, v in sorted(env.items()) if k in known]
    header = "# The settings of the running `filecdn run`; removed when it stops.\n"
    write_private(path, header + "".join(lines))


Credential = Callable[[db.Pool], Awaitable[str]]


async def kept_credential(
    dsn: str, path: Path, check: Callable[[db.Pool, str], Awaitable[object]], issue: Credential
) -> tuple[str, bool]:
    """The credential saved in `path` if `check` still accepts it (it raises otherwise),
    else a new one from `issue`, saved there (0600 from creation); and whether it is new."""
    pool = await db.create_pool(Settings(database_url=dsn, db_pool_min=1, db_pool_max=2))
    try:
        if path.exists():
            saved = path.read_text().strip()
            try:
                await check(pool, saved)
                return saved, False
            except Exception:  # revoked or from an older database: issue a new one
                pass
        value = await issue(pool)
        write_private(path, value + "\n")
        return value, True
    finally:
        await pool.close()


async def _new_demo_key(pool: db.Pool) -> str:
    if await pool.fetchval("SELECT 1 FROM teams WHERE name = $1", DEMO_TEAM) is None:
        await teams.create_team(pool, DEMO_TEAM)
    return await teams.create_key(pool, DEMO_TEAM)


async def ensure_demo_key(dsn: str, key_file: Path) -> tuple[str, bool]:
    """The demo team's key: the one in key_file if it still works, else a new one."""
    return await kept_credential(dsn, key_file, teams.authenticate, _new_demo_key)


async def ensure_ops_token(dsn: str, token_file: Path) -> tuple[str, bool]:
    """The operator token in token_file if it still works, else a new one written there."""
    return await kept_credential(
        dsn, token_file, ops_tokens.authenticate, lambda pool: ops_tokens.create(pool, "make run")
    )


def _wait_http(url: str, timeout: float, what: str) -> None:
    def ok() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    wait_until(ok, timeout, what)


def filecdn_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "cli", *args]


def run_stack() -> int:
    settings = Settings()
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    sup = Supervisor(data_dir / "logs")
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        console.print("[bold]filecdn[/]: starting the stack…")
        base = dict(os.environ)
        base.setdefault("LOG_FORMAT", "console")
        base.setdefault("EDGE_DRAIN_DELAY", "0")  # no load balancer to wait for on one machine
        # The ops listeners show every team's traffic: on one machine, only to itself.
        base["OPS_HOST"] = "127.0.0.1"
        env = stack_environment(sup, data_dir, base)
        write_stack_env(data_dir / "stack.env", env)
        asyncio.run(db.migrate(env["DATABASE_URL"]))
        key, new = asyncio.run(ensure_demo_key(env["DATABASE_URL"], data_dir / "demo-api-key"))
        ops_token, _ = asyncio.run(ensure_ops_token(env["DATABASE_URL"], data_dir / "ops-token"))
        for name in ("api", "worker", "edge"):
            if stopping:
                return 130
            sup.start(name, filecdn_argv(name), env=env, log_to_file=False)
        _wait_http(f"http://{settings.api_host}:{settings.api_port}/healthz", 60, "API")
        _wait_http(f"http://127.0.0.1:{settings.ops_port}/healthz", 60, "API ops listener")
        _wait_http(f"http://127.0.0.1:{settings.worker_ops_port}/healthz", 60, "worker")
        _wait_http(f"http://{settings.edge_host}:{settings.edge_port}/healthz", 60, "edge")
        wait_until(lambda: tcp_open(settings.api_host, settings.grpc_port), 30, "gRPC")
        _banner(settings, env, key, new, data_dir, ops_token)
        while not stopping:
            dead = sup.check_alive()
            if dead:
                console.print(f"[red]{escape(dead)} exited; stopping the stack[/]")
                return 1
            time.sleep(0.5)
        return 0
    except Exception as exc:
        console.print(f"[red]filecdn run failed:[/] {escape(str(exc))}")
        return 1
    finally:
        console.print("filecdn: stopping…")
        (data_dir / "stack.env").unlink(missing_ok=True)
        sup.close()
        console.print("filecdn: stopped")


def _banner(
    settings: Settings, env: dict[str, str], key: str, new: bool, data_dir: Path, ops_token: str
) -> None:
    lines = [
        f"REST API   http://{settings.api_host}:{settings.api_port}/v1/files",
        f"gRPC API   {settings.api_host}:{settings.grpc_port}"
        f'  (xai_sdk: api_host="localhost:{settings.grpc_port}")',
        f"Edge       {settings.edge_base_url}/<token>/<file_id>.<ext>",
        # Given URLs may carry passwords; the terminal is often shared or recorded.
        f"PostgreSQL {without_url_passwords(env['DATABASE_URL'])}",
        f"Redis      {without_url_passwords(env['REDIS_URL'])}",
        f"S3         {env['S3_ENDPOINT']}  bucket {env.get('S3_BUCKET', settings.s3_bucket)}",
        "",
        f"API key    {key}{'  (new)' if new else ''}",
        f"           saved in {data_dir / 'demo-api-key'}",
        "",
        f"Dashboard  http://127.0.0.1:{settings.ops_port}/  (the link above signs you in)",
        f"           operator token saved in {data_dir / 'ops-token'}",
        f"Ops ports  API {settings.ops_port}, worker {settings.worker_ops_port} (127.0.0.1)",
        "",
        "Ctrl-C stops everything.",
    ]
    # Unwrapped, so that it stays one link; the fragment never reaches the server's logs.
    console.print(
        f"Dashboard: http://127.0.0.1:{settings.ops_port}/#token={ops_token}", soft_wrap=True
    )
    # Settings are data (a DSN may hold "[...]"), never Rich markup.
    console.print(Panel(Text("\n".join(lines)), title="filecdn is running", expand=False))
