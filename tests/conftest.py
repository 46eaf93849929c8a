"""Real servers for the whole suite, started once: PostgreSQL, Valkey and SeaweedFS from
their wheels (or the ones DATABASE_URL / REDIS_URL / S3_ENDPOINT name), then the API and the
edge as real processes. Each test gets its own team; the worker is started by the tests that
need it (some must see the system with it stopped, killed or restarted).

The suite owns the servers it is given: it flushes Redis in one test. Client libraries are
imported where a fixture needs them, so that the pure tests start quickly.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from cli.debian import apt_install, install_hint
from cli.embedded import Supervisor, free_port, stop_process, tcp_open, wait_until
from shared.actors import Team
from shared.settings import Settings

if TYPE_CHECKING:
    import aiohttp

    from shared.resources import Resources
    from tests.helpers import Cli, OwnRedis

# Property tests are part of the suite, not a search: the same examples every run (derandomize),
# no example database, no per-example deadline on a busy 2-core machine. Each test names its
# own max_examples.
hypothesis_settings.register_profile(
    "filecdn",
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=False,
    suppress_health_check=[HealthCheck.too_slow],
)
hypothesis_settings.load_profile("filecdn")

# Lowered so that expiry runs end to end in seconds; one test checks the real defaults.
TEST_LIMITS = {
    "EXPIRES_AFTER_MIN": "1",
    "RECONCILE_INTERVAL": "2",
    "EVENT_CLAIM_IDLE_MS": "1500",
    # Below the upload limit, so that "too large to share" can be shown with a real upload.
    "PUBLIC_URL_MAX_BYTES": str(12 * 1024 * 1024),
    # Some tests upload 100+ small files at once from one team (paging, a killed worker's
    # events); tests/test_upload_limits.py shows the limit with an API of its own.
    "UPLOADS_PER_TEAM": "256",
}


@dataclass
class Stack:
    env: dict[str, str]
    settings: Settings
    data_dir: Path
    sup: Supervisor
    api_url: str
    edge_url: str
    grpc_target: str
    edge_ops_url: str  # the edge's private listener: /metrics (all workers), /readyz
    ops_url: str  # the API's private listener: dashboard, /api/..., /metrics, /readyz
    ops_token: str  # an operator token for /api/...
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    worker_ops_ports: dict[int, int] = field(default_factory=dict)  # pid -> WORKER_OPS_PORT

    def start_worker(self, **extra_env: str) -> subprocess.Popen[bytes]:
        """A worker process; each gets a free WORKER_OPS_PORT unless one is given."""
        from cli.stack import filecdn_argv

        name = f"worker-{len(self.workers)}"
        env = {**self.env, "WORKER_OPS_PORT": str(free_port()), **extra_env}
        proc = self.sup.start(name, filecdn_argv("worker"), env=env)
        self.workers.append(proc)
        self.worker_ops_ports[proc.pid] = int(env["WORKER_OPS_PORT"])
        return proc


def _infra_env() -> dict[str, str]:
    """The environment the suite runs in, minus stack settings a developer may have set."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("API_", "EDGE_", "GRPC_"))}
    keep.pop("PUBLIC_BASE_URL", None)
    keep.pop("DATA_DIR", None)
    return keep


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    from cli.stack import filecdn_argv, stack_environment
    from shared import db, ops_tokens
    from shared.resources import open_resources

    data_dir = Path(tempfile.mkdtemp(prefix="filecdn-test-"))
    sup = Supervisor(data_dir / "logs")
    try:
        env = stack_environment(sup, data_dir, _infra_env(), test_mode=True)
        api_port, grpc_port, edge_port = free_port(), free_port(), free_port()
        edge_ops_port, ops_port = free_port(), free_port()
        env.update(TEST_LIMITS)
        env.update(
            {
                "API_PORT": str(api_port),
                "GRPC_PORT": str(grpc_port),
                "EDGE_PORT": str(edge_port),
                "PUBLIC_BASE_URL": f"http://127.0.0.1:{edge_port}",
                "LOG_FORMAT": "json",
                "EDGE_WORKERS": "2",
                "EDGE_OPS_PORT": str(edge_ops_port),
                # No load balancer watches /readyz here: stopping need not wait for one.
                "EDGE_DRAIN_DELAY": "0",
                "OPS_PORT": str(ops_port),
                "WORKER_OPS_PORT": str(free_port()),
            }
        )
        asyncio.run(db.migrate(env["DATABASE_URL"]))

        async def new_ops_token() -> str:
            async with open_resources(Settings.from_env(env)) as r:
                return await ops_tokens.create(r.db, "test suite")

        ops_token = asyncio.run(new_ops_token())
        sup.start("api", filecdn_argv("api"), env=env)
        sup.start("edge", filecdn_argv("edge"), env=env)
        wait_until(lambda: tcp_open("127.0.0.1", api_port), 60, "API")
        wait_until(lambda: tcp_open("127.0.0.1", ops_port), 60, "API ops listener")
        wait_until(lambda: tcp_open("127.0.0.1", edge_port), 60, "edge")
        settings = Settings.from_env(env)
        yield Stack(
            env,
            settings,
            data_dir,
            sup,
            f"http://127.0.0.1:{api_port}",
            f"http://127.0.0.1:{edge_port}",
            f"localhost:{grpc_port}",
            f"http://127.0.0.1:{edge_ops_port}",
            f"http://127.0.0.1:{ops_port}",
            ops_token,
        )
    finally:
        sup.close()
        for name in ("postgres", "valkey", "seaweedfs"):  # keep the logs, drop the data
            shutil.rmtree(data_dir / name, ignore_errors=True)
        print(f"\nfilecdn test logs: {data_dir / 'logs'}", file=sys.stderr)


@dataclass
class Topology:
    """An API and an edge (and, on demand, a worker) whose token cache is a Redis Cluster
    or a primary whose replica the edge reads; PostgreSQL and S3 are the suite's."""

    name: str  # "cluster" or "replica"
    stack: Stack
    env: dict[str, str]  # the API's and the worker's
    api_url: str
    edge_url: str
    primaries: list[str]  # the token cache's writable servers
    replica: str | None = None  # the server the edge reads, when not a primary

    def start_worker(self) -> WorkerHandle:
        handle = WorkerHandle(self.stack, self.env)
        handle.start()
        return handle

    def process(self, name: str) -> subprocess.Popen[bytes]:
        [proc] = [p for n, p, _ in self.stack.sup.children if n == f"{self.name}-{name}"]
        return proc


def _db_url(url: str, db: int) -> str:
    """The same Redis, another database: each topology's jobs and events stay its own."""
    from urllib.parse import urlsplit, urlunsplit

    return urlunsplit(urlsplit(url)._replace(path=f"/{db}"))


@pytest.fixture(scope="session", params=["cluster", "replica"])
def topology(request: pytest.FixtureRequest, stack: Stack) -> Iterator[Topology]:
    """Started once per session each (servers ~1 s, API and edge ~3 s); stopped when the
    tests that use one are done."""
    from cli.embedded import form_cluster, make_replica, start_valkey
    from cli.stack import filecdn_argv

    name: str = request.param
    sup = stack.sup
    started: list[str] = []

    def valkey(role: str, *, cluster: bool = False) -> tuple[str, int]:
        port = free_port(also_free=(10000,)) if cluster else free_port()  # + the bus port
        server = f"{name}-{role}"
        url = start_valkey(
            sup, stack.data_dir / server, persist=False, port=port, name=server, cluster=cluster
        )
        started.append(server)
        return url, port

    try:
        if name == "cluster":
            nodes = [valkey(f"shard{i}", cluster=True) for i in range(3)]
            form_cluster([port for _, port in nodes])
            primaries, replica = [url for url, _ in nodes], None
            token_env = {"TOKEN_REDIS_MODE": "cluster", "TOKEN_REDIS_URL": primaries[0]}
            edge_token_env = token_env
        else:
            (primary, primary_port), (replica, replica_port) = valkey("primary"), valkey("copy")
            make_replica(replica_port, primary_port)
            primaries = [primary]
            token_env = {
                "TOKEN_REDIS_URL": primary,
                "TOKEN_REDIS_WAIT_REPLICAS": "1",
                "TOKEN_REDIS_WAIT_TIMEOUT": "0.5",
            }
            edge_token_env = {"TOKEN_REDIS_URL": replica}
        api_port, grpc_port, edge_port = free_port(), free_port(), free_port()
        env = {
            **stack.env,
            **token_env,
            "REDIS_URL": _db_url(stack.env["REDIS_URL"], 1 if name == "cluster" else 2),
            "API_PORT": str(api_port),
            "GRPC_PORT": str(grpc_port),
            "EDGE_PORT": str(edge_port),
            "OPS_PORT": str(free_port()),
            "EDGE_OPS_PORT": str(free_port()),
            "WORKER_OPS_PORT": str(free_port()),
            "PUBLIC_BASE_URL": f"http://127.0.0.1:{edge_port}",
            "EDGE_WORKERS": "1",
        }
        for process, process_env in (("api", env), ("edge", {**env, **edge_token_env})):
            sup.start(f"{name}-{process}", filecdn_argv(process), env=process_env)
            started.append(f"{name}-{process}")
        wait_until(lambda: tcp_open("127.0.0.1", api_port), 60, f"{name} API")
        wait_until(lambda: tcp_open("127.0.0.1", edge_port), 60, f"{name} edge")
        yield Topology(
            name,
            stack,
            env,
            f"http://127.0.0.1:{api_port}",
            f"http://127.0.0.1:{edge_port}",
            primaries,
            replica,
        )
    finally:
        for child, proc, sig in sup.children:  # all at once: each may take a moment to stop
            if child in started and proc.poll() is None:
                proc.send_signal(sig)
        for server in reversed(started):
            sup.stop(server)


@pytest.fixture(scope="session")
async def res(stack: Stack) -> AsyncIterator[Resources]:
    """Direct access to the same PostgreSQL, Redis and S3, to check what tests cannot see."""
    from shared.resources import open_resources

    async with open_resources(stack.settings) as r:
        yield r


@pytest.fixture
async def own_redis(stack: Stack) -> AsyncIterator[OwnRedis]:
    """A Redis of the test's own, stopped after the test (edges pointed at it see no other)."""
    from tests.helpers import OwnRedis

    r = OwnRedis(stack, f"valkey-{uuid.uuid4().hex[:8]}")
    yield r
    await r.client.aclose()
    r.stop()


@dataclass
class TeamKey:
    team: Team
    key: str


async def new_team(res: Resources) -> TeamKey:
    from shared import teams

    team = await teams.create_team(res.db, f"team-{uuid.uuid4().hex[:12]}")
    return TeamKey(team, await teams.create_key(res.db, team.name))


@pytest.fixture
async def team(res: Resources) -> TeamKey:
    return await new_team(res)


@contextlib.asynccontextmanager
async def team_client(api_url: str, team: TeamKey) -> AsyncIterator[aiohttp.ClientSession]:
    import aiohttp

    async with aiohttp.ClientSession(
        base_url=api_url, headers={"Authorization": f"Bearer {team.key}"}
    ) as session:
        yield session


@pytest.fixture
async def api(stack: Stack, team: TeamKey) -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client for the REST API, authenticated as this test's team."""
    async with team_client(stack.api_url, team) as session:
        yield session


@pytest.fixture
async def tapi(topology: Topology, team: TeamKey) -> AsyncIterator[aiohttp.ClientSession]:
    """The same for a token-cache topology's own API."""
    async with team_client(topology.api_url, team) as session:
        yield session


@pytest.fixture
def cli(stack: Stack, team: TeamKey, tmp_path: Path) -> Cli:
    """The `filecdn files` command, pointed at the stack as this test's team."""
    from tests.helpers import Cli

    env = {k: v for k, v in os.environ.items() if k not in ("XAI_API_KEY", "FILECDN_API_URL")}
    env.update({"FILECDN_API_URL": stack.api_url, "XAI_API_KEY": team.key})
    return Cli(env, tmp_path)


@pytest.fixture
async def anon(stack: Stack) -> AsyncIterator[aiohttp.ClientSession]:
    """An unauthenticated HTTP client (the API and, with full URLs, the edge)."""
    import aiohttp

    async with aiohttp.ClientSession(base_url=stack.api_url) as session:
        yield session


@pytest.fixture
async def stub(stack: Stack) -> AsyncIterator[Any]:
    """A raw `xai_api.Files` stub (messages as tests build them, malformed ones included)."""
    import grpc
    from xai_sdk.proto import files_pb2_grpc

    options = [("grpc.max_send_message_length", 32 * 1024 * 1024)]
    async with grpc.aio.insecure_channel(stack.grpc_target, options=options) as channel:
        yield files_pb2_grpc.FilesStub(channel)


@pytest.fixture
def worker(stack: Stack) -> Iterator[WorkerHandle]:
    handle = WorkerHandle(stack)
    handle.start()
    yield handle
    handle.stop()


class WorkerHandle:
    """One worker process that a test can stop, kill and start again."""

    def __init__(self, stack: Stack, env: dict[str, str] | None = None) -> None:
        self.stack = stack
        self.env = env or {}  # another stack's settings (a token-cache topology's)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def ops_url(self) -> str:
        """Its private listener: /metrics, /healthz (the heartbeat)."""
        assert self.proc is not None, "the worker is not running"
        return f"http://127.0.0.1:{self.stack.worker_ops_ports[self.proc.pid]}"

    def start(self, **extra_env: str) -> None:
        self.proc = self.stack.start_worker(**self.env, **extra_env)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.proc = None


# --- headless Chromium (Debian's), for the browser tests ---------------------------------
# Where it is missing the session installs it with apt-get when it can (root, apt-get
# present), else those tests are skipped with the reason and the command that installs it.
# Playwright never downloads a browser here.

CHROMIUM = Path("/usr/bin/chromium")
INSTALL_HINT = install_hint("chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    """Debian's Chromium, installed once per session if it is missing and we can."""
    if not CHROMIUM.exists():
        why = apt_install("chromium", CHROMIUM)
        if why is not None:
            pytest.skip(
                f"headless Chromium is missing at {CHROMIUM} ({why}); install: {INSTALL_HINT}"
            )
    return CHROMIUM


@pytest.fixture(scope="module")
async def browser(chromium_path: Path) -> AsyncIterator[Any]:
    """Headless Chromium driven by Playwright (a `playwright.async_api.Browser`)."""
    playwright_api = pytest.importorskip(
        "playwright.async_api", reason="Playwright is missing: pip install -e '.[dev]'"
    )
    # Playwright's launch() gives Chromium a fresh, temporary --user-data-dir of its own.
    async with playwright_api.async_playwright() as pw:
        b = await pw.chromium.launch(
            executable_path=str(chromium_path), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield b
        finally:
            await b.close()
