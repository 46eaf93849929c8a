"""Local rollout rehearsal: edge instances behind HAProxy, rolled and scaled under load.

No cluster runs here, so this plays the parts Kubernetes would, in the order the manifests
ask for (deploy/base/edge.yaml):

- HAProxy (Debian's) is the Service: it health-checks every instance's `/readyz` on its
  ops port (inter 500 ms, fall 1, rise 1) and routes GETs to the ready ones. It never
  retries (`retries 0`): a refused or reset connection reaches the client as a failure.
- An instance is a pod: `filecdn edge` joined to a running stack with the stack's settings
  (what `make run` writes to DATA_DIR/stack.env), its own ports and its own disk cache.
- Deleting a pod: its endpoint leaves the Service at once (HAProxy's runtime API puts the
  server in maintenance: no new requests, the ones under way continue), the preStop sleep
  runs, then SIGTERM: the edge drains (`/readyz` 503, EDGE_DRAIN_DELAY still serving with
  `Connection: close`, listener closed, responses under way finished within
  EDGE_DRAIN_TIMEOUT) and exits. Past terminationGracePeriodSeconds it gets SIGKILL.
- A rollout surges first (`maxUnavailable: 0`): start the new instance, wait until HAProxy
  sees it ready, then delete an old one; one at a time. Scaling up starts instances and
  waits for them; scaling down deletes one at a time (the HPA's scale-down policy).

Under continuous load (small GETs, slow large downloads through small socket buffers, so
that the edges are still sending when they drain, and GETs of URLs that get revoked through
the API while it runs) it runs: 1 replica, scale 1 -> 3, roll all 3, roll them again with
SIGTERM alone (no endpoint removal, no preStop: HAProxy learns from `/readyz`, as a load
balancer outside the cluster would), scale 3 -> 1. Per phase it counts requests, failed
requests, downloads cut short, and 200s for a URL whose revoke the API had acknowledged
before the request began (all three goal 0), and each drain's time from SIGTERM to exit.

Usage: python bench/rehearsal.py [--quick] [--port-base 23000]
(`make rehearsal`). It starts its own stack with `filecdn run` (private DATA_DIR and ports),
joins the edges to it through DATA_DIR/stack.env, and installs HAProxy with apt-get when it
is missing and it runs as root. tests/test_rollout_rehearsal.py runs a short version.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import yaml

from cli.debian import apt_install, install_hint
from cli.embedded import Supervisor, free_port
from cli.stack import filecdn_argv
from shared.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
HAPROXY = Path("/usr/sbin/haproxy")
EDGE_MANIFEST = ROOT / "deploy" / "base" / "edge.yaml"
EDGE_ENV = ROOT / "deploy" / "base" / "edge.env"


# --- what the manifests say -----------------------------------------------------------------


@dataclass(frozen=True)
class Timings:
    prestop: float  # preStop sleep: out of the Service's endpoints, still serving
    drain_delay: float  # EDGE_DRAIN_DELAY
    drain_timeout: float  # EDGE_DRAIN_TIMEOUT
    grace: float  # terminationGracePeriodSeconds, from deletion to SIGKILL

    @classmethod
    def from_manifests(cls) -> Timings:
        """The edge Deployment's preStop and grace period, and the drain settings its
        ConfigMaps give (the settings' defaults where they give none)."""
        [deployment] = [
            d for d in yaml.safe_load_all(EDGE_MANIFEST.read_text()) if d["kind"] == "Deployment"
        ]
        pod = deployment["spec"]["template"]["spec"]
        [edge] = [c for c in pod["containers"] if c["name"] == "edge"]
        command = edge["lifecycle"]["preStop"]["exec"]["command"]
        assert command[0] == "sleep", command
        env = dict(
            line.split("=", 1)
            for line in EDGE_ENV.read_text().splitlines()
            if line and not line.startswith("#")
        )
        defaults = Settings.model_fields
        return cls(
            prestop=float(command[1]),
            drain_delay=float(env.get("EDGE_DRAIN_DELAY", defaults["edge_drain_delay"].default)),
            drain_timeout=float(
                env.get("EDGE_DRAIN_TIMEOUT", defaults["edge_drain_timeout"].default)
            ),
            grace=float(pod["terminationGracePeriodSeconds"]),
        )


def manifest_workers() -> int:
    for line in EDGE_ENV.read_text().splitlines():
        if line.startswith("EDGE_WORKERS="):
            return int(line.split("=", 1)[1])
    return int(Settings.model_fields["edge_workers"].default)


# --- HAProxy --------------------------------------------------------------------------------


def haproxy_missing() -> str | None:
    """None when HAProxy is here (installed now if it can be), else why not and how."""
    why = apt_install("haproxy", HAPROXY)
    return (
        None if why is None else f"HAProxy is missing ({why}); install: {install_hint('haproxy')}"
    )


class HAProxy:
    """The load balancer in front of the instances' slots: server `sN` is slot N."""

    def __init__(self, sup: Supervisor, workdir: Path, port: int, slots: Sequence[Slot]) -> None:
        self.sup = sup
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None
        # A short path: a Unix socket's is limited to 107 bytes, and pytest's tmp_path is long.
        self.socket = Path(tempfile.mkdtemp(prefix="haproxy-")) / "admin.sock"
        self.config = workdir / "haproxy.cfg"
        servers = "".join(
            f"  server s{s.index} 127.0.0.1:{s.port} check port {s.ops_port}\n" for s in slots
        )
        self.config.write_text(
            f"""global
  stats socket {self.socket} mode 600 level admin
  maxconn 4000
  # Small socket buffers toward the clients and the edges, as the clients' own (below):
  # else the kernel takes a whole download off the edge at once, and a drain would never
  # see one under way.
  tune.rcvbuf.server 65536
  tune.sndbuf.client 65536
defaults
  mode http
  timeout connect 2s
  timeout client 120s
  timeout server 120s
  # Never hide an instance's refusal or reset behind a retry on another one.
  retries 0
frontend edge
  bind 127.0.0.1:{port}
  default_backend edges
backend edges
  balance roundrobin
  option httpchk GET /readyz
  http-check expect status 200
  default-server inter 500ms fall 1 rise 1
  # Which instance answered, so that the client can tell the downloads each drain had.
  http-response set-header X-Edge-Slot %s
{servers}"""
        )

    def start(self) -> None:
        done = subprocess.run(
            [str(HAPROXY), "-c", "-q", "-f", str(self.config)], capture_output=True, text=True
        )
        if done.returncode != 0:
            raise RuntimeError(f"haproxy refuses its config: {done.stderr or done.stdout}")
        self.proc = self.sup.start("haproxy", [str(HAPROXY), "-db", "-f", str(self.config)], env={})

    def close(self) -> None:
        self.sup.stop("haproxy")
        shutil.rmtree(self.socket.parent, ignore_errors=True)

    async def command(self, line: str) -> str:
        if self.proc is None or self.proc.poll() is not None:
            log = (self.sup.log_dir / "haproxy.log").read_text()[-2000:]
            raise RuntimeError(f"haproxy exited: {log}")
        reader, writer = await asyncio.open_unix_connection(str(self.socket))
        try:
            writer.write(line.encode() + b"\n")
            await writer.drain()
            return (await reader.read()).decode()
        finally:
            writer.close()

    async def servers(self) -> dict[int, tuple[str, int]]:
        """Slot -> (HAProxy's status for it: UP, DOWN, MAINT..., requests under way)."""
        text = await self.command("show stat")
        rows = csv.DictReader(text.lstrip("# ").splitlines())
        return {
            int(row["svname"][1:]): (row["status"], int(row["scur"] or 0))
            for row in rows
            if row["pxname"] == "edges" and row["svname"].startswith("s")
        }

    async def remove(self, slot: int) -> None:
        """The endpoint leaves the Service: no new requests; those under way go on."""
        answer = await self.command(f"set server edges/s{slot} state maint")
        if answer.strip():
            raise RuntimeError(f"haproxy: {answer.strip()}")


async def poll(check: Any, within: float, what: str, every: float = 0.05) -> None:
    """Until `await check()` is true; TimeoutError past `within` seconds."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {within:g}s")
        await asyncio.sleep(every)


# --- the edge "Deployment" ------------------------------------------------------------------


@dataclass(frozen=True)
class Slot:
    index: int
    port: int
    ops_port: int


@dataclass
class Instance:
    slot: Slot
    name: str
    proc: subprocess.Popen[bytes]


@dataclass(frozen=True)
class Drain:
    slot: int
    removed: float  # monotonic: out of the Service
    sigterm: float
    exited: float
    exit_code: int | None
    killed: bool  # still running at the end of the grace period: SIGKILL

    @property
    def seconds(self) -> float:
        """SIGTERM to exit: the edge's own drain."""
        return self.exited - self.sigterm


class Fleet:
    """Edge instances in HAProxy's slots; each slot is used once (a pod's address)."""

    def __init__(
        self,
        sup: Supervisor,
        env: dict[str, str],
        workdir: Path,
        timings: Timings,
        workers: int,
        slots: Sequence[Slot],
        lb: HAProxy,
    ) -> None:
        self.sup, self.env, self.workdir = sup, env, workdir
        self.timings, self.workers, self.lb = timings, workers, lb
        self.free = list(slots)
        self.live: list[Instance] = []
        self.drains: list[Drain] = []

    def log(self, name: str) -> Path:
        return self.sup.log_dir / f"{name}.log"

    async def start(self) -> Instance:
        """A new instance, once HAProxy's health check has found it ready."""
        slot = self.free.pop(0)
        name = f"edge-s{slot.index}"
        env = {
            **self.env,
            "EDGE_PORT": str(slot.port),
            "EDGE_OPS_PORT": str(slot.ops_port),
            "EDGE_DISK_CACHE_DIR": str(self.workdir / f"{name}-cache"),  # its own emptyDir
            "EDGE_DRAIN_DELAY": str(self.timings.drain_delay),
            "EDGE_DRAIN_TIMEOUT": str(self.timings.drain_timeout),
            "EDGE_WORKERS": str(self.workers),
        }
        proc = self.sup.start(name, filecdn_argv("edge"), env=env)
        instance = Instance(slot, name, proc)

        async def up() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited: {self.log(name).read_text()[-2000:]}")
            return (await self.lb.servers())[slot.index][0] == "UP"

        await poll(up, 60, f"{name} ready in HAProxy")
        self.live.append(instance)
        return instance

    async def delete(self, instance: Instance, *, endpoints: bool = True) -> Drain:
        """What deleting the pod does: out of the endpoints, preStop, SIGTERM, drain, exit.

        endpoints=False: SIGTERM at once, and the load balancer only learns from `/readyz`
        (no preStop; a load balancer outside the cluster that checks the pods itself).
        """
        self.live.remove(instance)
        t = self.timings
        deleted = time.monotonic()
        if endpoints:
            await self.lb.remove(instance.slot.index)
            await asyncio.sleep(t.prestop)
        instance.proc.send_signal(signal.SIGTERM)
        sigterm = time.monotonic()
        killed = False

        async def exited() -> bool:
            return instance.proc.poll() is not None

        try:
            await poll(exited, max(0.0, deleted + t.grace - time.monotonic()), instance.name)
        except TimeoutError:
            killed = True
            instance.proc.send_signal(signal.SIGKILL)
            await poll(exited, 10, f"{instance.name} after SIGKILL")
        drain = Drain(
            instance.slot.index,
            deleted,
            sigterm,
            time.monotonic(),
            instance.proc.returncode,
            killed,
        )
        self.drains.append(drain)
        return drain


# --- the load -------------------------------------------------------------------------------


@dataclass
class Shared:
    file_id: str
    path: str  # /<token>/<name>, on whichever edge
    data: bytes
    revoked_at: float | None = None  # when the API acknowledged the revoke


@dataclass
class Outcome:
    phase: str
    kind: str  # small, large, revocable
    began: float  # monotonic
    after_revoke: bool  # began after its URL's revoke was acknowledged
    ended: float = 0.0
    slot: int | None = None  # the instance that answered (HAProxy's X-Edge-Slot)
    status: int | None = None
    failed: str | None = None  # why, when the request failed (no answer, or a wrong one)
    cut: bool = False  # a download that began (200) and did not arrive whole

    @property
    def revoked_200(self) -> bool:
        """200 for a URL whose revoke the API had acknowledged before the request began."""
        return self.after_revoke and self.status == 200

    def under_way_at(self, drain: Drain, moment: float) -> bool:
        return self.slot == drain.slot and self.began < moment < self.ended


async def share(api: aiohttp.ClientSession, data: bytes, filename: str) -> Shared:
    form = aiohttp.FormData()
    form.add_field("file", data, filename=filename, content_type="application/octet-stream")
    async with api.post("/v1/files", data=form) as r:
        body = await r.json()
        if r.status != 200:
            raise RuntimeError(f"upload: {r.status} {body}")
    async with api.post(f"/v1/files/{body['id']}/public-url", json={}) as r:
        url = await r.json()
        if r.status != 200:
            raise RuntimeError(f"public URL: {r.status} {url}")
    return Shared(body["id"], urlsplit(url["public_url"]).path, data)


@dataclass(frozen=True)
class LoadShape:
    small_clients: int = 16
    large_clients: int = 4
    revocable_clients: int = 4
    small_bytes: int = 10 * 1024
    large_bytes: int = 8 * 1024 * 1024
    large_rate: float = 4 * 1024 * 1024  # bytes/s a downloader reads: long downloads
    small_pause: float = 0.0  # between one client's requests
    revocable_urls: int = 12
    revoke_every: float = 2.0  # seconds


def small_receive_buffer(addr_info: Any) -> socket.socket:
    """A client socket that holds 64 KiB unread: a slow reader is slow all the way back."""
    family, type_, proto, _, _ = addr_info
    sock = socket.socket(family, type_, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    return sock


class Load:
    def __init__(
        self, url: str, api: aiohttp.ClientSession, shape: LoadShape, files: Files
    ) -> None:
        self.url, self.api, self.shape, self.files = url, api, shape, files
        self.phase = "start"
        self.outcomes: list[Outcome] = []
        self.revokes: list[tuple[str, float]] = []  # phase, seconds to the acknowledgement
        self.stopping = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self.session: aiohttp.ClientSession | None = None
        self.downloading: dict[int, int] = {}  # slot -> large downloads it is sending

    async def __aenter__(self) -> Load:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, socket_factory=small_receive_buffer),
            timeout=aiohttp.ClientTimeout(total=120, sock_connect=5),
            auto_decompress=False,
        )
        s = self.shape
        for kind, n in (
            ("small", s.small_clients),
            ("large", s.large_clients),
            ("revocable", s.revocable_clients),
        ):
            self.tasks += [asyncio.create_task(self.client(kind)) for _ in range(n)]
        self.tasks.append(asyncio.create_task(self.revoker()))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stopping.set()
        try:
            await asyncio.gather(*self.tasks)
        finally:
            if self.session is not None:
                await self.session.close()

    async def client(self, kind: str) -> None:
        pool = {"small": self.files.small, "large": self.files.large}.get(
            kind, self.files.revocable
        )
        while not self.stopping.is_set():
            self.outcomes.append(await self.get(kind, random.choice(pool)))
            if kind != "large" and self.shape.small_pause:
                await asyncio.sleep(self.shape.small_pause)

    async def get(self, kind: str, f: Shared) -> Outcome:
        assert self.session is not None
        o = Outcome(self.phase, kind, time.monotonic(), f.revoked_at is not None)
        try:
            async with self.session.get(self.url + f.path) as r:
                o.status = r.status
                o.slot = int(r.headers.get("X-Edge-Slot", "s-1")[1:])
                if r.status == 200:
                    if kind == "large":
                        self.downloading[o.slot] = self.downloading.get(o.slot, 0) + 1
                    try:
                        body = await self.body(r, throttle=kind == "large")
                    finally:
                        if kind == "large":
                            self.downloading[o.slot] -= 1
                    if body != f.data:
                        o.failed, o.cut = f"body {len(body)} of {len(f.data)} bytes", True
                elif not (kind == "revocable" and r.status == 404):
                    o.failed = f"{r.status} {(await r.read())[:200]!r}"
                else:
                    await r.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            o.failed = f"{type(exc).__name__}: {exc}"
            o.cut = o.status == 200  # the download began and did not arrive whole
        o.ended = time.monotonic()
        return o

    async def body(self, r: aiohttp.ClientResponse, *, throttle: bool) -> bytes:
        if not throttle:
            return await r.read()
        out = bytearray()
        began = time.monotonic()
        while chunk := await r.content.read(256 * 1024):
            out += chunk
            ahead = len(out) / self.shape.large_rate - (time.monotonic() - began)
            if ahead > 0:  # a slow client: the download stays under way for seconds
                await asyncio.sleep(ahead)
        return bytes(out)

    async def revoker(self) -> None:
        waiting = list(self.files.revocable)
        random.shuffle(waiting)
        while waiting and not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), self.shape.revoke_every)
            if self.stopping.is_set():
                return
            f = waiting.pop()
            began = time.monotonic()
            async with self.api.post(f"/v1/files/{f.file_id}/public-url/revoke") as r:
                if r.status != 200:
                    raise RuntimeError(f"revoke: {r.status} {await r.text()}")
                await r.read()
            f.revoked_at = time.monotonic()  # acknowledged: no 200 for it from now on
            self.revokes.append((self.phase, f.revoked_at - began))


@dataclass
class Files:
    small: list[Shared]
    large: list[Shared]
    revocable: list[Shared]

    @classmethod
    async def shared(cls, api: aiohttp.ClientSession, shape: LoadShape) -> Files:
        def png(n: int, i: int) -> bytes:
            return b"\x89PNG\r\n\x1a\n" + i.to_bytes(4, "big") + os.urandom(n - 12)

        small = [await share(api, png(shape.small_bytes, i), f"s{i}.png") for i in range(8)]
        large = [
            await share(
                api, b"\x00\x00\x00\x18ftypmp42" + os.urandom(shape.large_bytes - 12), f"l{i}.mp4"
            )
            for i in range(2)
        ]
        revocable = [
            await share(api, png(2048, 100 + i), f"r{i}.png") for i in range(shape.revocable_urls)
        ]
        return cls(small, large, revocable)


# --- the rehearsal --------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    seconds: float = 0.0
    outcomes: list[Outcome] = field(default_factory=list)
    drains: list[Drain] = field(default_factory=list)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.failed and not o.cut]

    @property
    def cut(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.cut]

    @property
    def revoked_200(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.revoked_200]


@dataclass
class Report:
    phases: list[Phase]
    timings: Timings
    workers: int
    revokes: list[tuple[str, float]]

    @property
    def total(self) -> Phase:
        all_ = Phase("total", sum(p.seconds for p in self.phases))
        for p in self.phases:
            all_.outcomes += p.outcomes
            all_.drains += p.drains
        return all_

    def under_way(self, drain: Drain) -> int:
        """Large downloads the draining instance was sending when it got SIGTERM."""
        return sum(
            o.kind == "large" and o.under_way_at(drain, drain.sigterm)
            for p in self.phases
            for o in p.outcomes
        )

    def table(self) -> str:
        t = self.timings
        lines = [
            f"edge: {self.workers} worker(s) per instance; preStop {t.prestop:g} s, "
            f"EDGE_DRAIN_DELAY {t.drain_delay:g} s, EDGE_DRAIN_TIMEOUT {t.drain_timeout:g} s, "
            f"grace {t.grace:g} s; HAProxy checks /readyz every 500 ms (fall 1, rise 1), "
            "no retries",
            "",
            "| phase | s | requests | failed | downloads cut | revokes | 200 after revoke "
            "| downloads under way at SIGTERM | drain: SIGTERM to exit |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for p in [*self.phases, self.total]:
            if p.name != "total":
                drains = ", ".join(f"{d.seconds:.2f} s" + " KILLED" * d.killed for d in p.drains)
            elif p.drains:
                seconds = [d.seconds for d in p.drains]
                drains = f"median {statistics.median(seconds):.2f} s, max {max(seconds):.2f} s"
            name = f"**{p.name}**" if p.name == "total" else p.name
            under_way = sum(self.under_way(d) for d in p.drains) if p.drains else ""
            revokes = sum(p.name in ("total", phase) for phase, _ in self.revokes)
            lines.append(
                f"| {name} | {p.seconds:.1f} | {len(p.outcomes):,} | {len(p.failed)} "
                f"| {len(p.cut)} | {revokes} | {len(p.revoked_200)} | {under_way} | {drains} |"
            )
        total = self.total
        after = [o for o in total.outcomes if o.after_revoke]
        large = [o for o in total.outcomes if o.kind == "large" and not o.failed]
        revoke_ms = statistics.median(s for _, s in self.revokes) * 1000 if self.revokes else 0.0
        lines += [
            "",
            f"revokes: {len(self.revokes)} (acknowledged in median {revoke_ms:.0f} ms); "
            f"requests begun after their URL's revoke was acknowledged: {len(after):,}, "
            f"of which 404: {sum(o.status == 404 for o in after):,}; "
            f"whole large downloads: {len(large):,}",
        ]
        lines += [f"  {o.phase} {o.kind}: {o.failed}" for o in (total.failed + total.cut)[:10]]
        return "\n".join(lines)


async def rehearse(
    *,
    env: dict[str, str],
    api: aiohttp.ClientSession,
    workdir: Path,
    timings: Timings,
    workers: int,
    shape: LoadShape,
    steady: float,
    readiness_roll: bool = False,
    ports: Iterator[int],
) -> Report:
    """1 replica, scale to 3, roll the 3 (and again with SIGTERM alone if readiness_roll),
    scale to 1, all under load; the figures."""
    os.makedirs(workdir, exist_ok=True)
    files = await Files.shared(api, shape)
    # 1 + 2 scaled + 3 rolled (+ 3 rolled again)
    slots = [Slot(i, next(ports), next(ports)) for i in range(9 if readiness_roll else 6)]
    sup = Supervisor(workdir / "logs")
    phases: list[Phase] = []
    with contextlib.ExitStack() as stack:
        stack.callback(sup.close)
        lb = HAProxy(sup, workdir, next(ports), slots)
        stack.callback(lb.close)
        lb.start()

        async def all_down() -> bool:  # HAProxy takes servers as up until their first check
            with contextlib.suppress(OSError):
                states = await lb.servers()
                return len(states) == len(slots) and all(s == "DOWN" for s, _ in states.values())
            return False

        await poll(all_down, 30, "HAProxy's first checks")
        fleet = Fleet(sup, env, workdir, timings, workers, slots, lb)
        await fleet.start()
        async with Load(lb.url, api, shape, files) as load:

            @contextlib.asynccontextmanager
            async def phase(name: str) -> Any:
                p = Phase(name)
                load.phase, began, drains = name, time.monotonic(), len(fleet.drains)
                yield
                p.seconds = time.monotonic() - began
                p.drains = fleet.drains[drains:]
                phases.append(p)

            async def delete(old: Instance, *, endpoints: bool = True) -> None:
                # Once a large download is under way on it (they are long, so it still is at
                # SIGTERM): every drain then has one to finish.
                async def downloading() -> bool:
                    return load.downloading.get(old.slot.index, 0) > 0

                with contextlib.suppress(TimeoutError):
                    await poll(downloading, 10, "a download under way")
                await fleet.delete(old, endpoints=endpoints)

            async with phase("1 replica"):
                await asyncio.sleep(steady)
            async with phase("scale 1 → 3"):
                await asyncio.gather(fleet.start(), fleet.start())
                await asyncio.sleep(steady)
            async with phase("roll 3 (surge 1, one at a time)"):
                for old in list(fleet.live):
                    await fleet.start()
                    await delete(old)
                await asyncio.sleep(steady)
            if readiness_roll:
                async with phase("roll 3, no preStop: HAProxy sees /readyz 503"):
                    for old in list(fleet.live):
                        await fleet.start()
                        await delete(old, endpoints=False)
                    await asyncio.sleep(steady)
            async with phase("scale 3 → 1"):
                for old in fleet.live[:-1]:
                    await delete(old)
                await asyncio.sleep(steady)
            load.phase = "stopping"
        # Attribute each request to the phase it began in (the load's list is in end order).
        by_name = {p.name: p for p in phases}
        for o in load.outcomes:
            if o.phase in by_name:
                by_name[o.phase].outcomes.append(o)
        return Report(phases, timings, workers, load.revokes)


# --- `make rehearsal`: against a `filecdn run` of its own -----------------------------------


def sourced(env_file: Path) -> dict[str, str]:
    """What `set -a; . env_file` exports, as an operator joining the stack would get it."""
    out = subprocess.run(
        ["sh", "-c", 'set -a; . "$0"; exec env -0', str(env_file)],
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(line.split("=", 1) for line in out.split("\0") if "=" in line)


def port_source(base: int | None) -> Iterator[int]:
    n = base
    while True:
        if n is None:
            yield free_port()
        else:
            yield n
            n += 1


async def main(args: argparse.Namespace) -> int:
    why = haproxy_missing()
    if why:
        print(why, file=sys.stderr)
        return 2
    ports = port_source(args.port_base)
    work = Path(tempfile.mkdtemp(prefix="filecdn-rehearsal-"))
    data_dir = work / "data"
    api_port = next(ports)
    stack_env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "S3_ENDPOINT") and not k.startswith("EDGE_")
    }
    stack_env.update(
        DATA_DIR=str(data_dir),
        API_PORT=str(api_port),
        GRPC_PORT=str(next(ports)),
        OPS_PORT=str(next(ports)),
        WORKER_OPS_PORT=str(next(ports)),
        EDGE_PORT=str(next(ports)),
        EDGE_OPS_PORT=str(next(ports)),
        LOG_FORMAT="json",
    )
    sup = Supervisor(work / "logs")
    try:
        print(f"starting the stack (filecdn run, DATA_DIR={data_dir})…", file=sys.stderr)
        sup.start("stack", filecdn_argv("run"), env=stack_env, stop_signal=signal.SIGINT)
        env_file = data_dir / "stack.env"

        async def stack_up() -> bool:
            if sup.check_alive():
                raise RuntimeError(f"filecdn run exited: see {work / 'logs' / 'stack.log'}")
            return "filecdn is running" in (work / "logs" / "stack.log").read_text()

        await poll(stack_up, 300, "filecdn run", every=0.5)
        assert env_file.stat().st_mode & 0o777 == 0o600, "stack.env must be private"
        env = {**sourced(env_file), "LOG_FORMAT": "json"}
        key = (data_dir / "demo-api-key").read_text().strip()
        timings = Timings.from_manifests()
        if args.quick:
            timings = Timings(1.0, 1.0, timings.drain_timeout, timings.grace)
        workers = args.workers or manifest_workers()
        shape = LoadShape(
            small_clients=args.clients,
            large_clients=args.large_clients,
            revocable_clients=max(2, args.clients // 4),
            revocable_urls=60,  # one revoke every 3 s, through every phase
            revoke_every=3.0,
            # 16 s per download: those begun just before an instance leaves the Service are
            # still under way at its SIGTERM (preStop 10 s later), and end within its drain.
            large_bytes=32 * 1024 * 1024,
            large_rate=2 * 1024 * 1024,
        )
        print(f"rehearsing (logs in {work / 'rehearsal' / 'logs'})…", file=sys.stderr)
        async with aiohttp.ClientSession(
            base_url=f"http://127.0.0.1:{api_port}", headers={"Authorization": f"Bearer {key}"}
        ) as api:
            report = await rehearse(
                env=env,
                api=api,
                workdir=work / "rehearsal",
                timings=timings,
                workers=workers,
                shape=shape,
                steady=args.steady,
                readiness_roll=not args.quick,
                ports=ports,
            )
        print(report.table())
        total = report.total
        return 0 if not (total.failed or total.cut or total.revoked_200) else 1
    finally:
        sup.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="preStop and drain delay 1 s")
    parser.add_argument("--workers", type=int, help="per instance (default: deploy/base/edge.env)")
    parser.add_argument("--clients", type=int, default=32, help="small-GET clients")
    parser.add_argument("--large-clients", type=int, default=6, help="slow 32 MiB downloaders")
    parser.add_argument("--steady", type=float, default=3.0, help="seconds after each phase")
    parser.add_argument("--port-base", type=int, help="consecutive ports from here (else free)")
    raise SystemExit(asyncio.run(main(parser.parse_args())))
