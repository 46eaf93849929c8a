"""Dependencies that fail on cue: a TCP proxy in front of PostgreSQL, Redis or S3 that can
refuse (nothing listens; open connections are reset) or hang (connections are accepted
and kept, and nothing more is forwarded either way), and be restored.

Used by the outage tests and by `bench/outages.py`, which prints the README's table. It runs
in the caller's event loop: wait with `await`, never with a blocking sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

Mode = Literal["up", "refused", "hung"]
_READ = 64 * 1024


@dataclass
class FaultyLink:
    """A proxy to one server; `url_through` rewrites its URL to come through the proxy."""

    target_host: str
    target_port: int
    port: int = 0
    mode: Mode = "up"
    _server: asyncio.Server | None = None
    _flowing: asyncio.Event = field(default_factory=asyncio.Event)
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    @classmethod
    def to(cls, url: str) -> FaultyLink:
        parts = urlsplit(url)
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"a URL with a host and a port, not {url!r}")
        return cls(parts.hostname, parts.port)

    def url_through(self, url: str) -> str:
        parts = urlsplit(url)
        auth = parts.netloc.rpartition("@")[0]
        netloc = f"{auth}@127.0.0.1:{self.port}" if auth else f"127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    async def start(self) -> FaultyLink:
        self._flowing.set()
        self._server = await asyncio.start_server(
            self._accepted, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self.mode = "up"
        return self

    async def refuse(self) -> None:
        """Stop listening (new connections are refused) and reset every open one."""
        self.mode = "refused"
        if self._server is not None:
            self._server.close()
            self._server = None
        self._reset_all()

    def hang(self) -> None:
        """Keep every connection, accept new ones, forward nothing."""
        self.mode = "hung"
        self._flowing.clear()

    async def restore(self) -> None:
        """Back to forwarding. Connections held while hung are reset: their clients have
        given up on them, and a stale reply must not reach a newer request."""
        if self.mode == "hung":
            self._reset_all()
        if self._server is None:
            await self.start()
        self.mode = "up"
        self._flowing.set()

    async def close(self) -> None:
        await self.refuse()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _reset_all(self) -> None:
        for writer in list(self._writers):
            sock = writer.get_extra_info("socket")
            with contextlib.suppress(OSError):
                if sock is not None:  # RST, not FIN: as a crashed or rebooted server
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        self._writers.clear()

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._flowing.wait()  # hung: accepted, and nothing else
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
            self._writers.add(up_writer)
            await asyncio.gather(
                self._pump(reader, up_writer), self._pump(up_reader, writer), return_exceptions=True
            )
        except (OSError, asyncio.CancelledError):
            pass  # the link was refused or closed: its connections go with it
        finally:
            writer.transport.abort()
            self._writers.discard(writer)
            self._tasks.discard(task)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(_READ):
                await self._flowing.wait()
                dst.write(data)
                await dst.drain()
        finally:
            dst.transport.abort()
            self._writers.discard(dst)


@contextlib.asynccontextmanager
async def faulty_links(env: dict[str, str]) -> AsyncIterator[tuple[dict[str, str], Links]]:
    """Proxies in front of the environment's PostgreSQL, Redis and S3; yields the environment
    pointed through them, and the links."""
    links = Links(
        await FaultyLink.to(env["DATABASE_URL"]).start(),
        await FaultyLink.to(env["REDIS_URL"]).start(),
        await FaultyLink.to(env["S3_ENDPOINT"]).start(),
    )
    through = {
        **env,
        "DATABASE_URL": links.postgres.url_through(env["DATABASE_URL"]),
        "REDIS_URL": links.redis.url_through(env["REDIS_URL"]),
        "S3_ENDPOINT": links.s3.url_through(env["S3_ENDPOINT"]),
    }
    through.pop("TOKEN_REDIS_URL", None)
    try:
        yield through, links
    finally:
        for link in links.all():
            await link.close()


@dataclass
class Links:
    postgres: FaultyLink
    redis: FaultyLink
    s3: FaultyLink

    def all(self) -> list[FaultyLink]:
        return [self.postgres, self.redis, self.s3]

    def named(self, name: str) -> FaultyLink:
        link: FaultyLink = getattr(self, name)
        return link


async def tcp_ready(port: int, timeout: float = 60.0) -> None:
    """Wait, without blocking the loop the proxies run in, until something listens."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on {port} after {timeout:.0f}s")
        await asyncio.sleep(0.1)


# --- what the API answers while one dependency fails -------------------------------------

# (row label, link, mode): the README's table, in its order.
SCENARIOS: list[tuple[str, str, Mode]] = [
    ("S3 hung", "s3", "hung"),
    ("S3 refused", "s3", "refused"),
    ("PostgreSQL hung", "postgres", "hung"),
    ("PostgreSQL down", "postgres", "refused"),
    ("Redis hung", "redis", "hung"),
    ("Redis down", "redis", "refused"),
]
# The request each dependency's failure is shown with (the others are up): REST, gRPC.
PROBES = {
    "s3": ("GET /v1/files/{id}/content", "RetrieveFileContent"),
    "postgres": ("GET /v1/files/{id}", "RetrieveFile"),
    "redis": ("POST /v1/files/{id}/public-url", "CreatePublicUrl"),
}


@dataclass
class RestAnswer:
    status: int
    retry_after: str | None
    body: str
    seconds: float


@dataclass
class GrpcAnswer:
    code: str
    details: str
    seconds: float
    trailers: dict[str, str] = field(default_factory=dict)


async def rest_probe(api_url: str, key: str, dependency: str, file_id: str) -> RestAnswer:
    import aiohttp

    method, path = PROBES[dependency][0].split(" ")
    started = time.perf_counter()
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as s,
        s.request(
            method,
            api_url + path.format(id=file_id),
            headers={"Authorization": f"Bearer {key}"},
            json={} if method == "POST" else None,
        ) as r,
    ):
        body = await r.read()
        seconds = time.perf_counter() - started
        text = body.decode(errors="replace") if r.content_type != "application/octet-stream" else ""
        return RestAnswer(r.status, r.headers.get("Retry-After"), text[:200], seconds)


async def grpc_probe(target: str, key: str, dependency: str, file_id: str) -> GrpcAnswer:
    import grpc
    from xai_sdk.proto import files_pb2, files_pb2_grpc

    rpc = PROBES[dependency][1]
    metadata = (("authorization", f"Bearer {key}"),)
    started = time.perf_counter()
    async with grpc.aio.insecure_channel(target) as channel:
        stub = files_pb2_grpc.FilesStub(channel)
        try:
            if rpc == "RetrieveFileContent":
                call = stub.RetrieveFileContent(
                    files_pb2.RetrieveFileContentRequest(file_id=file_id),
                    metadata=metadata,
                    timeout=120,
                )
                async for _ in call:
                    pass
            elif rpc == "RetrieveFile":
                await stub.RetrieveFile(
                    files_pb2.RetrieveFileRequest(file_id=file_id), metadata=metadata, timeout=120
                )
            else:
                await stub.CreatePublicUrl(
                    files_pb2.CreatePublicUrlRequest(file_id=file_id),
                    metadata=metadata,
                    timeout=120,
                )
        except grpc.aio.AioRpcError as err:
            trailers = {k: str(v) for k, v in err.trailing_metadata() or ()}
            seconds = time.perf_counter() - started
            return GrpcAnswer(err.code().name, err.details() or "", seconds, trailers)
    return GrpcAnswer("OK", "", time.perf_counter() - started)


@dataclass
class Outcome:
    label: str
    dependency: str
    rest: RestAnswer
    grpc: GrpcAnswer


async def during_outage(
    links: Links,
    label: str,
    dependency: str,
    mode: Mode,
    *,
    api_url: str,
    grpc_target: str,
    key: str,
    file_id: str,
) -> Outcome:
    """Break one link, ask once over REST and once over gRPC, restore it, and wait until the
    API answers that request normally again."""
    link = links.named(dependency)
    if mode == "hung":
        link.hang()
    else:
        await link.refuse()
    try:
        rest = await rest_probe(api_url, key, dependency, file_id)
        grpc_answer = await grpc_probe(grpc_target, key, dependency, file_id)
    finally:
        await link.restore()
    deadline = time.monotonic() + 60
    while (await rest_probe(api_url, key, dependency, file_id)).status != 200:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the API did not recover from {label}")
        await asyncio.sleep(0.2)
    return Outcome(label, dependency, rest, grpc_answer)


def table(outcomes: list[Outcome]) -> str:
    """The README's table (Markdown); the bodies and details follow it, once."""
    lines = [
        "| dependency | REST request | answer | s | gRPC call | answer | s |",
        "| --- | --- | --- | ---: | --- | --- | ---: |",
    ]
    bodies, details = set(), set()
    for o in outcomes:
        rest_path, rpc = PROBES[o.dependency]
        retry = f" + `Retry-After: {o.rest.retry_after}`" if o.rest.retry_after else ""
        lines.append(
            f"| {o.label} | `{rest_path}` | {o.rest.status}{retry} | {o.rest.seconds:.2f} "
            f"| `{rpc}` | `{o.grpc.code}` | {o.grpc.seconds:.2f} |"
        )
        bodies.add(o.rest.body)
        details.add(o.grpc.details)
    lines.append("")
    lines += [f"REST body: `{b}`" for b in sorted(bodies)]
    lines += [f"gRPC details: `{d}`" for d in sorted(details)]
    return "\n".join(lines)
