"""Small helpers for tests: sample files, uploads, public URLs, raw gRPC messages, the
README's snippets, polling, what is left in S3/Redis, and edge processes (and Redis servers)
of a test's own."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
import psutil
import redis.asyncio as aioredis
from multidict import CIMultiDictProxy

from cli.embedded import free_port, start_valkey, tcp_open, wait_until
from cli.stack import filecdn_argv
from shared import token_cache
from shared.resources import Resources
from shared.teams import Team

if TYPE_CHECKING:
    from tests.conftest import Stack, TeamKey

README = Path(__file__).resolve().parent.parent / "README.md"

# The seed's PNG: a signature and 32 zero bytes.
SEED_PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


def png(size: int = 2048) -> bytes:
    return (b"\x89PNG\r\n\x1a\n" + os.urandom(size))[:size]


def jpeg(size: int = 2048) -> bytes:
    return (b"\xff\xd8\xff\xe0" + os.urandom(size))[:size]


def mp4(size: int = 4096) -> bytes:
    return (b"\x00\x00\x00\x18ftypisom" + os.urandom(size))[:size]


def pdf(size: int = 2048) -> bytes:
    return (b"%PDF-1.7\n" + os.urandom(size))[:size]


def form(
    data: bytes,
    filename: str = "a.png",
    *,
    before: dict[str, str] | None = None,
    after: dict[str, str] | None = None,
    content_type: str | None = None,
) -> aiohttp.FormData:
    """A multipart body with fields in the given order around the file part."""
    fd = aiohttp.FormData(quote_fields=False)
    for k, v in (before or {}).items():
        fd.add_field(k, v)
    fd.add_field(
        "file", data, filename=filename, content_type=content_type or "application/octet-stream"
    )
    for k, v in (after or {}).items():
        fd.add_field(k, v)
    return fd


async def upload(
    api: aiohttp.ClientSession, data: bytes, filename: str = "a.png", **kw: Any
) -> dict[str, Any]:
    """Upload and return the file object; fails the test on any error status."""
    async with api.post("/v1/files", data=form(data, filename, **kw)) as r:
        body = await r.json()
        assert r.status == 200, body
        return body  # type: ignore[no-any-return]


async def call(api: aiohttp.ClientSession, method: str, path: str, **kw: Any) -> tuple[int, Any]:
    async with api.request(method, path, **kw) as r:
        if r.content_type == "application/json":
            return r.status, await r.json()
        return r.status, await r.read()


async def wait_for(
    check: Callable[[], Awaitable[bool]], timeout: float = 15.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def _hammer(url: str, stop: asyncio.Event, log: list[tuple[float, int]]) -> None:
    async with aiohttp.ClientSession() as s:
        while not stop.is_set():
            started = time.monotonic()
            async with s.get(url) as r:
                await r.read()
                log.append((started, r.status))


async def race_revocation(url: str, kill: Callable[[], Awaitable[object]]) -> None:
    """Readers hammer the URL; after `kill` returns, no request they start may see a 200."""
    stop = asyncio.Event()
    log: list[tuple[float, int]] = []
    readers = [asyncio.create_task(_hammer(url, stop, log)) for _ in range(8)]

    async def seen_alive() -> bool:
        return any(s == 200 for _, s in log)

    await wait_for(seen_alive, what="the readers to see the URL alive")
    await kill()
    returned = time.monotonic()

    async def read_after() -> bool:  # every reader has had its chance, twice
        return sum(t >= returned for t, _ in log) >= 2 * len(readers)

    await wait_for(read_after, what="reads started after the call returned")
    stop.set()
    await asyncio.gather(*readers)
    before = [s for t, s in log if t < returned]
    after = [s for t, s in log if t >= returned]
    assert 200 in before, "the readers never saw the URL alive"
    assert after and set(after) == {404}, f"{after.count(200)} 200s after the call returned"


async def until(
    check: Callable[[], bool | Awaitable[bool]], what: str, timeout: float = 15
) -> None:
    """Poll a plain or async check until it holds (wait_for for either kind)."""

    async def probe() -> bool:
        result = check()
        return bool(await result) if inspect.isawaitable(result) else bool(result)

    await wait_for(probe, timeout, what)


async def until_past(res: Resources, deadline: float) -> None:
    """Wait until PostgreSQL's clock, which deadlines are judged by, reaches `deadline`
    (Unix seconds). The edge and Redis read the same host clock."""

    async def reached() -> bool:
        return bool(await res.db.fetchval("SELECT now() >= to_timestamp($1)", float(deadline)))

    await wait_for(reached, timeout=max(0.0, deadline - time.time()) + 10, what="the deadline")


def logged(stack: Stack, process: str, **fields: object) -> list[dict[str, Any]]:
    """The JSON log lines a process of the test stack has written with all these fields."""
    path = stack.data_dir / "logs" / f"{process}.log"
    found = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{") and all(str(v) in line for v in fields.values()):
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if all(event.get(k) == v for k, v in fields.items()):
                    found.append(event)
    return found


async def wait_for_log(
    stack: Stack, process: str, timeout: float = 15.0, **fields: object
) -> dict[str, Any]:
    """The first log line with these fields, once the process has written it."""

    async def written() -> bool:
        return bool(logged(stack, process, **fields))

    await wait_for(written, timeout, what=f"{process} to log {fields}")
    return logged(stack, process, **fields)[0]


async def object_keys(res: Resources) -> set[str]:
    return {k async for k, _ in res.storage.list_objects("objects/")}


async def pending_multipart_uploads(res: Resources) -> int:
    result = await res.storage.run_in_thread(
        res.storage.client._list_multipart_uploads, res.storage.bucket
    )
    return len(result.uploads)


async def team_rows(res: Resources, team: Team) -> int:
    return int(await res.db.fetchval("SELECT count(*) FROM files WHERE team_id = $1", team.id))


async def snapshot(res: Resources, team: Team) -> tuple[int, set[str], int, int]:
    """What a rejected request must not change: rows, objects, open uploads, queued jobs."""
    jobs = await res.redis.zcard(res.settings.arq_queue_name)
    return (
        await team_rows(res, team),
        await object_keys(res),
        await pending_multipart_uploads(res),
        jobs,
    )


@dataclass(frozen=True)
class Leftovers:
    """What no request may leave behind, in the whole system (every team): an object with
    no row, an open multipart upload, a token-cache entry with no active URL, a queued job
    for a file or URL row that does not exist. Compare two with `since`: other tests may
    have left their own on purpose (a killed worker, say)."""

    orphan_objects: frozenset[str]
    open_uploads: int
    stray_tokens: frozenset[str]
    stray_jobs: frozenset[str]

    def since(self, before: Leftovers) -> Leftovers:
        return Leftovers(
            self.orphan_objects - before.orphan_objects,
            max(0, self.open_uploads - before.open_uploads),
            self.stray_tokens - before.stray_tokens,
            self.stray_jobs - before.stray_jobs,
        )

    def __bool__(self) -> bool:
        return bool(
            self.orphan_objects or self.open_uploads or self.stray_tokens or self.stray_jobs
        )


async def leftovers(res: Resources) -> Leftovers:
    keys = await object_keys(res)
    with_rows = {
        r["object_key"]
        for r in await res.db.fetch(
            "SELECT object_key FROM files WHERE object_key = any($1::text[])", list(keys)
        )
    }
    tokens = [t async for batch in res.tokens.tokens(500) for t in batch]
    active = {
        r["token"]
        for r in await res.db.fetch(
            """SELECT u.token FROM public_urls u JOIN files f ON f.id = u.file_id
                WHERE u.token = any($1::text[]) AND u.revoked_at IS NULL
                  AND (u.expires_at IS NULL OR u.expires_at > now()) AND f.deleted_at IS NULL""",
            tokens,
        )
    }
    inactive = [t for t in tokens if t not in active]
    # An entry that dies at its deadline between the scan and the query is gone by now.
    present = await res.tokens.present(inactive) if inactive else []
    stray_tokens = {t for t, alive in zip(inactive, present, strict=True) if alive}
    return Leftovers(
        frozenset(keys - with_rows),
        await pending_multipart_uploads(res),
        frozenset(stray_tokens),
        frozenset(await stray_jobs(res)),
    )


async def start_raw_upload(
    stack: Stack, key: str, request_id: str, declared: int
) -> asyncio.StreamWriter:
    """A REST upload written by hand on a raw socket: the request's headers (declaring
    `declared` body bytes) and the file part's head; the caller sends what it likes of the
    body, then drops the connection the way a vanishing client does."""
    boundary = "xyzBOUNDARYxyz"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="x.bin"\r\nContent-Type: application/octet-stream\r\n\r\n'
    ).encode()
    host, port = stack.api_url.removeprefix("http://").split(":")
    _reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"POST /v1/files HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
        f"X-Request-Id: {request_id}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {declared}\r\n\r\n".encode()
        + head
    )
    return writer


async def stray_jobs(res: Resources) -> set[str]:
    """Queued expiry jobs (ids per shared/scheduling.py) whose row does not exist."""
    jobs = [j.decode() for j in await res.redis.zrange(res.settings.arq_queue_name, 0, -1)]
    file_ids = {j.split(":", 1)[1] for j in jobs if j.startswith("file-expiry:")}
    url_ids = {int(j.split(":")[1]) for j in jobs if j.startswith("url-expiry:")}
    files = {
        r["id"]
        for r in await res.db.fetch("SELECT id FROM files WHERE id = any($1::text[])", file_ids)
    }
    urls = {
        r["id"]
        for r in await res.db.fetch(
            "SELECT id FROM public_urls WHERE id = any($1::bigint[])", url_ids
        )
    }
    return {
        j
        for j in jobs
        if (j.startswith("file-expiry:") and j.split(":", 1)[1] not in files)
        or (j.startswith("url-expiry:") and int(j.split(":")[1]) not in urls)
    }


# --- public URLs ----------------------------------------------------------------------------


async def create(
    api: aiohttp.ClientSession, file_id: str, body: Any = None, **kw: Any
) -> tuple[int, Any]:
    kwargs: dict[str, Any] = {"json": body} if body is not None else {}
    kwargs.update(kw)
    return await call(api, "POST", f"/v1/files/{file_id}/public-url", **kwargs)


async def revoke(api: aiohttp.ClientSession, file_id: str) -> tuple[int, Any]:
    return await call(api, "POST", f"/v1/files/{file_id}/public-url/revoke")


async def fetch(url: str) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return r.status, await r.read()


def fetch_sync(url: str) -> tuple[int, bytes]:
    """GET a public URL from the edge, without an API key."""
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return int(r.status), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@dataclass
class Public:
    file_id: str
    url: str
    data: bytes

    @property
    def token(self) -> str:
        return self.url.rsplit("/", 2)[-2]


async def share(api: aiohttp.ClientSession, data: bytes, filename: str = "a.png") -> Public:
    f = await upload(api, data, filename)
    status, body = await create(api, f["id"], {})
    assert status == 200, body
    return Public(f["id"], body["public_url"], data)


async def get(
    url: str, method: str = "GET", **headers: str
) -> tuple[int, CIMultiDictProxy[str], bytes]:
    async with (
        aiohttp.ClientSession(auto_decompress=False) as s,
        s.request(method, url, headers=headers) as r,
    ):
        return r.status, r.headers, await r.read()


# --- edge processes and Redis servers of a test's own ---------------------------------------


@dataclass
class OwnEdge:
    """An edge started by a test (its own ports, disk cache and log), with its access log."""

    name: str
    url: str
    ops_url: str
    proc: psutil.Process
    log: Path
    cache_dir: Path
    popen: subprocess.Popen[bytes]

    def running(self) -> bool:
        """Not exited (psutil counts a zombie as running)."""
        return self.popen.poll() is None

    def public(self, public_url: str | Public) -> str:
        """The same /<token>/<name> on this edge."""
        url = public_url.url if isinstance(public_url, Public) else public_url
        return self.url + urlsplit(url).path

    def log_text(self) -> str:
        return self.log.read_bytes().decode("utf-8", "replace")

    def access(self) -> list[dict[str, Any]]:
        """The access-log entries written so far."""
        out = []
        for line in self.log_text().splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict) and entry.get("event") == "request":
                    out.append(entry)
        return out

    async def logged(self, n: int) -> list[dict[str, Any]]:
        """The access log once it holds n entries (a streamed response is logged after its
        last byte has left, which the client may see first)."""
        await until(lambda: len(self.access()) >= n, f"{n} access-log entries")
        return self.access()

    async def prometheus(self) -> str:
        """The ops listener's /metrics (summed over the edge's workers)."""
        async with aiohttp.ClientSession() as s, s.get(self.ops_url + "/metrics") as r:
            assert r.status == 200, r.status
            return await r.text()


@contextlib.contextmanager
def own_edge(stack: Stack, workers: int = 1, **env: str) -> Iterator[OwnEdge]:
    """`filecdn edge --workers N` with the stack's settings, free ports, the access log on."""
    name = f"edge-{uuid.uuid4().hex[:8]}"
    port, ops_port = free_port(), free_port()
    cache_dir = stack.data_dir / f"{name}-cache"
    full_env = {
        **stack.env,
        "EDGE_PORT": str(port),
        "EDGE_OPS_PORT": str(ops_port),
        "EDGE_DISK_CACHE_DIR": str(cache_dir),
        "EDGE_ACCESS_LOG": "true",
        **env,
    }
    proc = stack.sup.start(name, filecdn_argv("edge", "--workers", str(workers)), env=full_env)
    log = stack.data_dir / "logs" / f"{name}.log"
    try:
        wait_until(lambda: proc.poll() is not None or tcp_open("127.0.0.1", port), 60, name)
        assert proc.poll() is None, f"{name} exited: {log.read_text()[-2000:]}"
        yield OwnEdge(
            name,
            f"http://127.0.0.1:{port}",
            f"http://127.0.0.1:{ops_port}",
            psutil.Process(proc.pid),
            log,
            cache_dir,
            proc,
        )
    finally:
        stack.sup.stop(name)


async def gets_over_workers(edge: OwnEdge, urls: Sequence[Public], n: int) -> dict[str, list[int]]:
    """n GETs taking turns over the URLs, each on a new connection (so either of the edge's
    workers takes it), every third a byte range (206); {token: [hits, body bytes]} served."""
    served = {p.token: [0, 0] for p in urls}
    async with aiohttp.ClientSession() as s:
        for i in range(n):
            p = urls[i % len(urls)]
            headers = {"Connection": "close"}
            if i % 3 == 0:
                headers["Range"] = f"bytes={i}-{i + 999}"
            async with s.get(edge.public(p), headers=headers) as r:
                body = await r.read()
                assert r.status == (206 if "Range" in headers else 200)
            served[p.token][0] += 1
            served[p.token][1] += len(body)
    return served


class OwnRedis:
    """A Valkey of the test's own (that it can stop and restart), holding copies of tokens."""

    def __init__(self, stack: Stack, name: str) -> None:
        self.stack, self.name, self.port = stack, name, free_port()
        self.url = self.start()
        self.client = aioredis.Redis.from_url(self.url)

    def start(self) -> str:
        return start_valkey(
            self.stack.sup,
            self.stack.data_dir / self.name,
            persist=False,
            port=self.port,
            name=self.name,
        )

    def stop(self) -> None:
        self.stack.sup.stop(self.name)

    def signal(self, sig: signal.Signals) -> None:
        [proc] = [p for name, p, _ in self.stack.sup.children if name == self.name]
        proc.send_signal(sig)

    async def copy_token(self, res: Resources, token: str) -> None:
        await self.client.set(token_cache.key(token), await res.redis.get(token_cache.key(token)))


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(ops_url: str) -> Samples:
    """An edge's /metrics, parsed: {(sample name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    async with aiohttp.ClientSession() as s, s.get(ops_url + "/metrics") as r:
        assert r.status == 200, r.status
        text = await r.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def edge_workers(edge: OwnEdge, port: int | None = None) -> list[int]:
    """The pids of an edge's worker processes that listen on its public port."""
    port = port or urlsplit(edge.url).port
    pids = []
    for child in edge.proc.children():
        with contextlib.suppress(psutil.Error):
            if any(
                c.status == psutil.CONN_LISTEN and c.laddr.port == port
                for c in child.net_connections("tcp")
            ):
                pids.append(child.pid)
    return pids


def run_sourcing(env_file: Path, argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    """argv run with only PATH and what `set -a; . env_file` exports, as a person would."""
    return subprocess.run(
        ["sh", "-c", 'set -a; . "$0"; exec "$@"', str(env_file), *argv],
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        **kw,
    )


# --- the `filecdn files` command, as a script or a person runs it ---------------------------


@dataclass
class Cli:
    """Runs `python -m cli files ...` with FILECDN_API_URL and XAI_API_KEY set."""

    env: dict[str, str]
    cwd: Path

    def __call__(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cli", "files", *args],
            capture_output=True,
            text=True,
            env={**self.env, **env},
            cwd=self.cwd,
            timeout=60,
        )

    def json(self, *args: str) -> Any:
        done = self(*args, "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def bytes_out(self, *args: str) -> bytes:
        done = subprocess.run(
            [sys.executable, "-m", "cli", "files", *args],
            capture_output=True,
            env=self.env,
            cwd=self.cwd,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout


def one_line_error(done: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    return done.stderr.removeprefix("error: ").strip()


# --- raw gRPC messages (the SDK cannot send malformed streams) ------------------------------

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def auth(team: TeamKey) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {team.key}"),)


def init(name: str = "a.png", expires_after: int | None = None) -> Any:
    from xai_sdk.proto import files_pb2  # imported here: the SDK is slow to import

    return files_pb2.UploadFileChunk(
        init=files_pb2.UploadFileInit(name=name, expires_after=expires_after)
    )


def data(payload: bytes) -> Any:
    from xai_sdk.proto import files_pb2

    return files_pb2.UploadFileChunk(data=payload)


async def stream(chunks: Iterable[Any]) -> AsyncIterator[Any]:
    for c in chunks:
        yield c


async def uploaded(stub: Any, team: TeamKey, payload: bytes = PNG, name: str = "a.png") -> Any:
    return await stub.UploadFile(stream([init(name), data(payload)]), metadata=auth(team))


# --- the README's snippets, run as a user would ---------------------------------------------


def readme_snippet(imports: str) -> str:
    """The README's ```python block (in the SDK section) that contains `imports`."""
    text = README.read_text()
    section = text.split("<!-- section:sdk -->")[1].split("<!-- /section:sdk -->")[0]
    [block] = [b for b in re.findall(r"```python\n(.*?)```", section, re.S) if imports in b]
    return block


def run_snippet(code: str, stack: Stack, team: TeamKey, cwd: Path) -> list[str]:
    """Run it as a user would (a fresh interpreter), pointed at the test stack."""
    env = {
        **os.environ,
        "XAI_API_KEY": team.key,
        "FILECDN_GRPC": stack.grpc_target,
        "FILECDN_API_URL": stack.api_url,
    }
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=cwd, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


# --- API processes of a test's own ----------------------------------------------------------


@dataclass
class OwnApi:
    name: str
    url: str
    port: int
    grpc_target: str


@contextlib.contextmanager
def own_api(stack: Stack, name: str, **env: str) -> Iterator[OwnApi]:
    """`filecdn api` with the suite's servers and these settings (tiny limits, say), on
    ports of its own; its log is `<name>.log` for `logged` and `wait_for_log`."""
    port, grpc_port = free_port(), free_port()
    full_env = {
        **stack.env,
        "API_PORT": str(port),
        "GRPC_PORT": str(grpc_port),
        "OPS_PORT": str(free_port()),
        **env,
    }
    stack.sup.start(name, filecdn_argv("api"), env=full_env)
    try:
        wait_until(lambda: tcp_open("127.0.0.1", port), 60, name)
        yield OwnApi(name, f"http://127.0.0.1:{port}", port, f"localhost:{grpc_port}")
    finally:
        stack.sup.stop(name)
