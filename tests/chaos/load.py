"""The mixed load: per team, actors that upload (REST, some over gRPC, a few large enough
for S3's multipart path), create, update and revoke public URLs, delete files, download
and list; and readers that GET live and dead public URLs from the edge.

Every request and its outcome goes into the `History`, with what it acknowledged. After an
outcome the load cannot know (a 5xx, a timeout), it reads the file back before acting on
it again, and a read-back that says a URL or a file is gone counts as an acknowledgement
of that, at the time of its answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from tests.chaos.history import (
    Deadline,
    EdgeRead,
    File,
    History,
    definite,
    now,
    sha256,
    token_of,
)

API_TIMEOUT = aiohttp.ClientTimeout(total=20)
EDGE_TIMEOUT = aiohttp.ClientTimeout(total=8)
GRPC_TIMEOUT = 20.0
GRPC_CHUNK = 3 * 1024 * 1024  # the SDK's chunk size
LARGE = 6 * 1024 * 1024  # over one S3 part: the multipart path
MAGIC = {
    "png": b"\x89PNG\r\n\x1a\n",
    "jpg": b"\xff\xd8\xff\xe0",
    "pdf": b"%PDF-1.7\n",
    "mp4": b"\x00\x00\x00\x18ftypisom",
}


@dataclass
class TeamKey:
    name: str
    key: str


def sample_file(rng: random.Random, large: bool) -> tuple[str, bytes]:
    ext = rng.choice(list(MAGIC))
    size = LARGE + rng.randrange(1, 64 * 1024) if large else rng.randrange(64, 48 * 1024)
    return f"chaos.{ext}", (MAGIC[ext] + rng.randbytes(size))[:size]


def outcome_of(exc: BaseException) -> str:
    import grpc

    if isinstance(exc, grpc.aio.AioRpcError):
        return f"grpc:{exc.code().name}"
    return type(exc).__name__


class Load:
    def __init__(
        self,
        history: History,
        api_url: str,
        grpc_target: str,
        teams: list[TeamKey],
        seed: int,
        actors_per_team: int = 2,
        readers: int = 3,
    ) -> None:
        self.h = history
        self.api_url = api_url
        self.grpc_target = grpc_target
        self.teams = teams
        self.rng = random.Random(seed)
        self.actors_per_team = actors_per_team
        self.readers = readers
        self.bad_bytes: list[str] = []  # downloads during the run that were not byte-exact
        # One request at a time per file: what a response acknowledges is then ordered.
        self.busy: set[str] = set()

    # --- running ------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        import grpc
        from xai_sdk.proto import files_pb2_grpc

        options = [("grpc.max_send_message_length", 8 * 1024 * 1024)]
        async with (
            grpc.aio.insecure_channel(self.grpc_target, options=options) as channel,
            aiohttp.ClientSession(timeout=EDGE_TIMEOUT) as edge,
        ):
            stub = files_pb2_grpc.FilesStub(channel)
            sessions = [
                aiohttp.ClientSession(
                    base_url=self.api_url,
                    headers={"Authorization": f"Bearer {t.key}"},
                    timeout=API_TIMEOUT,
                )
                for t in self.teams
            ]
            try:
                tasks = [
                    asyncio.create_task(self._actor(team, api, stub, stop))
                    for team, api in zip(self.teams, sessions, strict=True)
                    for _ in range(self.actors_per_team)
                ]
                tasks += [
                    asyncio.create_task(self._reader(edge, stop)) for _ in range(self.readers)
                ]
                await asyncio.gather(*tasks)
            finally:
                for s in sessions:
                    await s.close()

    async def _actor(
        self, team: TeamKey, api: aiohttp.ClientSession, stub: Any, stop: asyncio.Event
    ) -> None:
        ops: list[tuple[int, Callable[[], Awaitable[None]]]] = [
            (4, lambda: self.upload(team, api)),
            (1, lambda: self.grpc_upload(team, stub)),
            (4, lambda: self.create(team, api)),
            (2, lambda: self.update(team, api)),
            (3, lambda: self.revoke(team, api)),
            (2, lambda: self.delete(team, api, stub)),
            (1, lambda: self.download(team, api)),
            (1, lambda: self.list(api)),
        ]
        weights = [w for w, _ in ops]
        while not stop.is_set():
            [(_, op)] = self.rng.choices(ops, weights)
            await op()
            await asyncio.sleep(self.rng.uniform(0.03, 0.12))

    async def _reader(self, edge: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        while not stop.is_set():
            tokens = list(self.h.tokens.values())
            if not tokens:
                await asyncio.sleep(0.1)
                continue
            live = [t for t in tokens if t.dead_ack is None]
            t = self.rng.choice(live if live and self.rng.random() < 0.75 else tokens)
            await self.edge_get(edge, t.token, t.url)
            await asyncio.sleep(0.01)

    # --- one request each -----------------------------------------------------------------

    async def _http(
        self,
        op: str,
        session: aiohttp.ClientSession,
        method: str,
        path: str,
        **kw: Any,
    ) -> tuple[str, Any, float]:
        """(outcome, JSON body or bytes or None, started)."""
        started = now()
        try:
            async with session.request(method, path, **kw) as r:
                body: Any = await r.read()
                if r.content_type == "application/json":
                    import json

                    with contextlib.suppress(ValueError):
                        body = json.loads(body)
                outcome = str(r.status)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self.h.record(op, started, outcome_of(exc))
            return outcome_of(exc), None, started
        self.h.record(op, started, outcome)
        return outcome, body, started

    @contextlib.asynccontextmanager
    async def _pick(
        self, team: TeamKey, want: Callable[[File], bool]
    ) -> AsyncIterator[File | None]:
        """A file of the team (not deleted, not in another actor's hands) that `want`s;
        held by this actor until the block ends."""
        files = [
            f
            for f in self.h.files.values()
            if f.team == team.name and f.deleted_ack is None and f.id not in self.busy
        ]
        chosen = [f for f in files if want(f)]
        if not chosen:
            yield None
            return
        f = self.rng.choice(chosen)
        self.busy.add(f.id)
        try:
            yield f
        finally:
            self.busy.discard(f.id)

    async def upload(self, team: TeamKey, api: aiohttp.ClientSession) -> None:
        name, data = sample_file(self.rng, large=self.rng.random() < 0.05)
        form = aiohttp.FormData()
        form.add_field("purpose", "assistants")
        form.add_field("file", data, filename=name, content_type="application/octet-stream")
        outcome, body, _ = await self._http("upload", api, "POST", "/v1/files", data=form)
        if outcome == "200" and isinstance(body, dict):
            self._uploaded(team, body["id"], data, "rest")

    def _uploaded(self, team: TeamKey, file_id: str, data: bytes, via: str) -> None:
        self.h.files[file_id] = File(file_id, team.name, sha256(data), len(data), now(), via)
        self.h.sent_bytes[file_id] = data

    async def grpc_upload(self, team: TeamKey, stub: Any) -> None:
        from xai_sdk.proto import files_pb2

        name, data = sample_file(self.rng, large=self.rng.random() < 0.05)

        async def chunks() -> AsyncIterator[Any]:
            yield files_pb2.UploadFileChunk(init=files_pb2.UploadFileInit(name=name))
            for i in range(0, len(data), GRPC_CHUNK):
                yield files_pb2.UploadFileChunk(data=data[i : i + GRPC_CHUNK])

        started = now()
        try:
            reply = await stub.UploadFile(
                chunks(), metadata=(("authorization", f"Bearer {team.key}"),), timeout=GRPC_TIMEOUT
            )
        except Exception as exc:
            self.h.record("grpc-upload", started, outcome_of(exc))
            return
        self.h.record("grpc-upload", started, "grpc:OK")
        self._uploaded(team, reply.id, data, "grpc")

    async def create(self, team: TeamKey, api: aiohttp.ClientSession) -> None:
        async with self._pick(team, lambda f: f.live_token is None) as f:
            if f is None or await self._unsure(f, api):
                return
            choice = self.rng.random()
            expires_after = (
                None if choice < 0.3 else (3600 if choice < 0.6 else self.rng.randint(2, 8))
            )
            await self._set_url(f, api, "create", expires_after)

    async def update(self, team: TeamKey, api: aiohttp.ClientSession) -> None:
        async with self._pick(team, lambda f: f.live_token is not None) as f:
            if f is None or await self._unsure(f, api):
                return
            await self._set_url(f, api, "update", self.rng.randint(3600, 7200))

    async def _set_url(
        self, f: File, api: aiohttp.ClientSession, op: str, expires_after: int | None
    ) -> None:
        body = {} if expires_after is None else {"expires_after": expires_after}
        self.h.touched.setdefault(f.id, []).append(now())
        outcome, got, started = await self._http(
            op, api, "POST", f"/v1/files/{f.id}/public-url", json=body
        )
        deadlines = self.h.deadlines.setdefault(f.id, [])
        if outcome == "200" and isinstance(got, dict):
            token = token_of(got["public_url"])
            at = now()
            for other in f.tokens:  # one live URL per file: any other is dead by now
                if other != token:
                    self.h.tokens[other].kill(at)
            self.h.token_seen(f, token, got["public_url"], at)
            f.live_token = token
            deadlines.append(Deadline(started, token, got.get("expires_at")))
        elif outcome[:1] == "4":
            if outcome == "404":
                self.h.file_gone(f, now())
        else:  # unknown: it may have set any deadline up to this one
            bound = None if expires_after is None else started + expires_after + 1
            deadlines.append(Deadline(started, None, bound))
            f.url_unknown = True
            self.h.unknown.setdefault(f.id, []).append(started)

    async def revoke(self, team: TeamKey, api: aiohttp.ClientSession) -> None:
        async with self._pick(team, lambda f: f.live_token is not None) as f:
            if f is None or await self._unsure(f, api):
                return
            self.h.touched.setdefault(f.id, []).append(now())
            outcome, got, started = await self._http(
                "revoke", api, "POST", f"/v1/files/{f.id}/public-url/revoke"
            )
            if outcome == "200" and isinstance(got, dict):
                at = now()  # revoked or not, no URL of the file is live once it answers
                for tok in f.tokens:
                    self.h.tokens[tok].kill(at)
                f.live_token = None
            elif not definite(outcome):
                f.url_unknown = True
                self.h.unknown.setdefault(f.id, []).append(started)

    async def delete(self, team: TeamKey, api: aiohttp.ClientSession, stub: Any) -> None:
        async with self._pick(team, lambda f: True) as f:
            if f is not None:
                await self._delete(team, f, api, stub)

    async def _delete(self, team: TeamKey, f: File, api: aiohttp.ClientSession, stub: Any) -> None:
        self.h.touched.setdefault(f.id, []).append(now())
        if self.rng.random() < 0.25:
            started = now()
            try:
                await stub.DeleteFile(
                    _delete_request(f.id),
                    metadata=(("authorization", f"Bearer {team.key}"),),
                    timeout=GRPC_TIMEOUT,
                )
                outcome = "grpc:OK"
            except Exception as exc:
                outcome = outcome_of(exc)
            self.h.record("grpc-delete", started, outcome)
            gone = outcome in ("grpc:OK", "grpc:NOT_FOUND")
        else:
            outcome, _, _ = await self._http("delete", api, "DELETE", f"/v1/files/{f.id}")
            gone = outcome in ("200", "404")
        if gone:
            self.h.file_gone(f, now())
        elif not definite(outcome):
            f.delete_unknown = True
            f.url_unknown = True
            self.h.unknown.setdefault(f.id, []).append(self.h.touched[f.id][-1])

    async def download(self, team: TeamKey, api: aiohttp.ClientSession) -> None:
        async with self._pick(team, lambda f: not f.delete_unknown and f.size < LARGE) as f:
            if f is None:
                return
            outcome, body, _ = await self._http("download", api, "GET", f"/v1/files/{f.id}/content")
            if outcome == "200" and isinstance(body, bytes) and sha256(body) != f.sha256:
                self.bad_bytes.append(f"{f.id}: {len(body)} bytes, not the {f.size} uploaded")

    async def list(self, api: aiohttp.ClientSession) -> None:
        await self._http("list", api, "GET", "/v1/files", params={"limit": "5"})

    async def _unsure(self, f: File, api: aiohttp.ClientSession) -> bool:
        """Read back a file whose URL or deletion is in doubt; True if still in doubt."""
        if not (f.url_unknown or f.delete_unknown):
            return False
        await read_back(self.h, f, api)
        return f.url_unknown or f.delete_unknown or f.deleted_ack is not None

    async def edge_get(self, edge: aiohttp.ClientSession, token: str, url: str) -> None:
        f = self.h.files[self.h.tokens[token].file_id]
        headers = {}
        span = None
        if self.rng.random() < 0.3:
            headers["Connection"] = "close"  # a new connection: either edge worker
        if self.rng.random() < 0.2 and f.size > 16:
            first = self.rng.randrange(0, f.size - 8)
            span = (first, min(f.size - 1, first + self.rng.randrange(1, 4096)))
            headers["Range"] = f"bytes={span[0]}-{span[1]}"
        started = now()
        try:
            async with edge.get(url, headers=headers) as r:
                body = await r.read()
                status = r.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self.h.record("edge-get", started, outcome_of(exc))
            self.h.reads.append(EdgeRead(token, started, None, ended=now()))
            return
        self.h.record("edge-get", started, str(status))
        self.h.reads.append(
            EdgeRead(token, started, status, sha256(body), span if status == 206 else None, now())
        )


def _delete_request(file_id: str) -> Any:
    from xai_sdk.proto import files_pb2

    return files_pb2.DeleteFileRequest(file_id=file_id)


async def read_back(h: History, f: File, api: aiohttp.ClientSession) -> None:
    """GET the file: what it says now settles what an unknown outcome did."""
    started = now()
    try:
        async with api.get(f"/v1/files/{f.id}") as r:
            body = await r.json() if r.status == 200 else None
            outcome = str(r.status)
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
        h.record("read-back", started, outcome_of(exc))
        return
    h.record("read-back", started, outcome)
    at = now()
    if outcome == "404":
        h.file_gone(f, at)
        f.delete_unknown = f.url_unknown = False
    elif outcome == "200" and isinstance(body, dict):
        f.delete_unknown = False
        url = body.get("public_url")
        live = token_of(url) if url else None
        for tok in f.tokens:
            if tok != live:
                h.tokens[tok].kill(at)
        if url and live:
            h.token_seen(f, live, url, at)
        f.live_token = live
        f.url_unknown = False
