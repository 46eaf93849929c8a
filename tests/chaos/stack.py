"""The chaos run's own stack: embedded PostgreSQL, Valkey and SeaweedFS on private ports
and a private data dir, then `filecdn api`, `filecdn worker` and `filecdn edge --workers 2`,
and the signals that break and restore each of them.

Nothing here reads DATABASE_URL, REDIS_URL or S3_ENDPOINT: the run never touches the
machine's servers. Ports come from a range when one is given (`--ports 24000-24999`), else
the kernel picks free ones.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from cli.embedded import (
    SEAWEEDFS_PORTS,
    Supervisor,
    free_port,
    start_postgres,
    start_seaweedfs,
    start_valkey,
    tcp_open,
    wait_until,
)
from cli.stack import filecdn_argv
from shared.settings import Settings

# What can be broken, in the order of the report's rows.
# "redis-empty": Redis killed and started again without its data (no persistence, or a
# failover to an empty replica): the token cache, jobs and events are gone.
TARGETS = ("api", "worker", "edge-worker", "redis", "redis-empty", "postgres", "s3")
# The server processes' names under the supervisor.
_SERVER = {"redis": "valkey", "redis-empty": "valkey", "postgres": "postgres", "s3": "seaweedfs"}

# Short enough that the run sees expiry, reconcile and the sweep do their work in minutes.
CHAOS_SETTINGS = {
    "LOG_FORMAT": "json",
    "EXPIRES_AFTER_MIN": "1",
    "RECONCILE_INTERVAL": "2",
    "EVENT_CLAIM_IDLE_MS": "1500",
    "SWEEP_INTERVAL_SECONDS": "3",
    # Longer than any fault lasts: an upload whose object is complete and whose row waits
    # on a frozen PostgreSQL must not lose its object to the sweep.
    "SWEEP_GRACE_SECONDS": "15",
    # Below that grace, so the sweep may abort a multipart upload the killed API left open.
    "UPLOAD_BODY_TIMEOUT": "12",
    "EDGE_WORKERS": "2",
    "EDGE_DRAIN_DELAY": "0",
}


class Ports:
    """Ports from [first, last] that are free now, none handed out twice; or, without a
    range, whatever the kernel picks."""

    def __init__(self, span: tuple[int, int] | None) -> None:
        self.span = span
        self.next = span[0] if span else 0
        self.taken: set[int] = set()

    def take(self, also_free: Sequence[int] = ()) -> int:
        if self.span is None:
            while True:
                port = free_port(also_free=also_free)
                if port not in self.taken:
                    self.taken.add(port)
                    return port
        while self.next <= self.span[1]:
            port, self.next = self.next, self.next + 1
            if all(_free(port + off) for off in (0, *also_free)):
                self.taken.add(port)
                return port
        raise RuntimeError(f"no free port left in {self.span[0]}-{self.span[1]}")


def _free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class ChaosStack:
    data_dir: Path
    sup: Supervisor
    env: dict[str, str]
    settings: Settings
    pg_port: int
    redis_port: int
    s3_ports: dict[str, int]
    frozen: set[int] = field(default_factory=set)  # pids we SIGSTOPped and not yet resumed

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.api_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.settings.grpc_port}"

    @property
    def edge_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.edge_port}"

    @property
    def edge_ops_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.edge_ops_port}"

    @property
    def worker_ops_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.worker_ops_port}"

    # --- processes ---------------------------------------------------------------------

    def proc(self, name: str) -> subprocess.Popen[bytes]:
        found = [p for n, p, _ in self.sup.children if n == name]
        if not found:
            raise RuntimeError(f"{name} is not running")
        return found[-1]

    def start_process(self, name: str) -> None:
        """`filecdn api|worker|edge` (again, after a kill: the dead entry is dropped)."""
        self._forget(name)
        argv = filecdn_argv(name) if name != "edge" else filecdn_argv("edge", "--workers", "2")
        self.sup.start(name, argv, env=self.env)

    def _forget(self, name: str) -> None:
        self.sup.children = [
            c for c in self.sup.children if not (c[0] == name and c[1].poll() is not None)
        ]

    def edge_workers(self) -> list[int]:
        """The edge's worker processes (its children listening on the edge port; not
        multiprocessing's resource tracker), oldest first."""
        port = self.settings.edge_port
        found = []
        with contextlib.suppress(psutil.Error):
            for kid in psutil.Process(self.proc("edge").pid).children():
                with contextlib.suppress(psutil.Error):
                    if any(
                        c.status == psutil.CONN_LISTEN and c.laddr.port == port
                        for c in kid.net_connections("tcp")
                    ):
                        found.append((kid.create_time(), kid.pid))
        return [pid for _, pid in sorted(found)]

    def pids(self, target: str) -> list[int]:
        """The process group leaders to signal for a target (an edge worker: one process)."""
        if target == "edge-worker":
            workers = self.edge_workers()
            return workers[-1:]
        name = _SERVER.get(target, target)
        return [self.proc(name).pid]

    def break_(self, target: str, sig: signal.Signals) -> list[int]:
        """Send sig to the target (its whole process group, except for one edge worker:
        PostgreSQL's backends die or freeze with their postmaster, as in a crash)."""
        pids = self.pids(target)
        for pid in pids:
            if target == "edge-worker":
                os.kill(pid, sig)
            else:
                os.killpg(pid, sig)
            if sig == signal.SIGSTOP:
                self.frozen.add(pid)
        if sig == signal.SIGKILL and target != "edge-worker":
            self.proc(_SERVER.get(target, target)).wait(10)  # reaped: gone before a restart
        return pids

    def restore(self, target: str, sig: signal.Signals, pids: list[int]) -> None:
        """Bring the target back: SIGCONT what was frozen; start again what was killed (an
        edge worker is restarted by the edge's own supervisor)."""
        if sig == signal.SIGSTOP:
            for pid in pids:
                if target == "edge-worker":
                    os.kill(pid, signal.SIGCONT)
                else:
                    os.killpg(pid, signal.SIGCONT)
                self.frozen.discard(pid)
            return
        if target in ("api", "worker"):
            self.start_process(target)
        elif target in ("redis", "redis-empty"):
            self._forget("valkey")
            if target == "redis-empty":
                for name in ("appendonlydir", "dump.rdb"):
                    path = self.data_dir / "valkey" / name
                    shutil.rmtree(path, ignore_errors=True)
                    path.unlink(missing_ok=True)
            start_valkey(self.sup, self.data_dir / "valkey", persist=True, port=self.redis_port)
        elif target == "postgres":
            self._forget("postgres")
            _wait_backends_gone(self.data_dir / "postgres")
            start_postgres(self.sup, self.data_dir / "postgres", port=self.pg_port)
        elif target == "s3":
            self._forget("seaweedfs")
            s = self.settings
            start_seaweedfs(
                self.sup,
                self.data_dir / "seaweedfs",
                s.s3_access_key,
                self.env["S3_SECRET_KEY"],
                s.s3_bucket,
                ports=self.s3_ports,
            )

    def exited(self) -> list[str]:
        """The targets whose process has exited (none should, but the one we killed)."""
        names = {"api": "api", "worker": "worker", "edge": "edge", **_SERVER}
        names.pop("redis-empty")
        out = []
        for target, name in names.items():
            try:
                if self.proc(name).poll() is not None:
                    out.append(target)
            except RuntimeError:
                out.append(target)
        return out

    def revive(self, target: str) -> None:
        """Start again a target that exited by itself (the edge as a whole, too)."""
        if target == "edge":
            self.start_process("edge")
        else:
            self.restore(target, signal.SIGKILL, [])

    def thaw_all(self) -> None:
        """SIGCONT anything still frozen (a run cut short must not leave stopped processes
        that the supervisor's SIGTERM cannot reach)."""
        for pid in list(self.frozen):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGCONT)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        self.frozen.clear()

    def close(self) -> None:
        self.thaw_all()
        self.sup.close()

    def dependency_env(self) -> dict[str, str]:
        return {k: self.env[k] for k in ("DATABASE_URL", "REDIS_URL", "S3_ENDPOINT")}


def _wait_backends_gone(pg_dir: Path, timeout: float = 20) -> None:
    """After the postmaster's SIGKILL its backends exit once they notice; the new
    postmaster refuses to start while any of them still holds the shared memory."""
    target = str(pg_dir.resolve())

    def gone() -> bool:
        for p in psutil.process_iter(["name", "cmdline"]):
            with contextlib.suppress(psutil.Error):
                # backends carry no -D: their working directory is the data directory
                if (
                    p.info["name"] == "postgres"
                    and p.status() != psutil.STATUS_ZOMBIE
                    and p.cwd() == target
                ):
                    return False
        return True

    wait_until(gone, timeout, "the killed PostgreSQL's backends to exit")


def _clean_env() -> dict[str, str]:
    """Our environment without anything that would point the stack elsewhere."""
    drop = ("API_", "EDGE_", "GRPC_", "OPS_", "WORKER_", "TOKEN_REDIS", "S3_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    for k in ("DATABASE_URL", "REDIS_URL", "PUBLIC_BASE_URL", "DATA_DIR", "PAGINATION_SECRET"):
        env.pop(k, None)
    return env


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def start(data_dir: Path, sup: Supervisor, ports: Ports, quota: int) -> ChaosStack:
    """Servers, migrations, then the three processes; returns once all of them answer."""
    import asyncio

    from shared import db

    pg_port = ports.take()
    redis_port = ports.take()
    s3_ports = {n: ports.take(also_free=(10000,)) for n in SEAWEEDFS_PORTS[:4]}
    s3_ports |= {n: ports.take() for n in SEAWEEDFS_PORTS[4:]}
    secret = secrets.token_urlsafe(24)
    env = _clean_env()
    env["DATABASE_URL"] = start_postgres(sup, data_dir / "postgres", port=pg_port)
    env["REDIS_URL"] = start_valkey(sup, data_dir / "valkey", persist=True, port=redis_port)
    env["S3_ENDPOINT"] = start_seaweedfs(
        sup, data_dir / "seaweedfs", "filecdn", secret, "filecdn", ports=s3_ports
    )
    api_port, grpc_port, edge_port = ports.take(), ports.take(), ports.take()
    env |= CHAOS_SETTINGS
    env |= {
        "S3_ACCESS_KEY": "filecdn",
        "S3_SECRET_KEY": secret,
        "S3_BUCKET": "filecdn",
        "DATA_DIR": str(data_dir),
        "PAGINATION_SECRET": secrets.token_urlsafe(32),
        "PUBLIC_URL_QUOTA": str(quota),
        "API_PORT": str(api_port),
        "GRPC_PORT": str(grpc_port),
        "EDGE_PORT": str(edge_port),
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{edge_port}",
        "OPS_PORT": str(ports.take()),
        "EDGE_OPS_PORT": str(ports.take()),
        "WORKER_OPS_PORT": str(ports.take()),
    }
    asyncio.run(db.migrate(env["DATABASE_URL"]))
    stack = ChaosStack(data_dir, sup, env, Settings.from_env(env), pg_port, redis_port, s3_ports)
    for name in ("api", "worker", "edge"):
        stack.start_process(name)
    wait_until(lambda: _http_ok(stack.api_url + "/healthz"), 60, "API")
    wait_until(lambda: tcp_open("127.0.0.1", grpc_port), 60, "gRPC")
    wait_until(lambda: _http_ok(stack.worker_ops_url + "/healthz"), 60, "worker")
    wait_until(lambda: _http_ok(stack.edge_url + "/healthz"), 60, "edge")
    wait_until(lambda: len(stack.edge_workers()) == 2, 30, "the edge's 2 workers")
    return stack


def drop_data(data_dir: Path) -> None:
    """Keep the logs (the report names them), drop the servers' data."""
    for name in ("postgres", "valkey", "seaweedfs", "edge-cache"):
        shutil.rmtree(data_dir / name, ignore_errors=True)
