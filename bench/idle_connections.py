"""Idle keep-alive connections: what each one costs an edge in memory (issue 12, goal ≤ 10 KiB).

Starts a Valkey (embedded, or REDIS_URL's) and one edge (`filecdn edge --workers 1` by
default: one process, so its RSS is the whole cost), then per run:
1. warms the edge up: 200 connections, one request each, closed (first-use allocations);
2. reads the edge's RSS (summed over its processes);
3. opens N connections from `--procs` client processes (each raises its fd limit with
   setrlimit), sends one `GET /healthz` on each and reads the answer: every connection is
   now an idle keep-alive connection, exactly what a browser leaves behind;
4. waits for the edge's RSS to settle, reads it again: (after - before) / N per connection;
5. holds them `--hold` seconds, then sends a second request on a sample of them to prove
   they are still open, and closes everything.
Each run starts a fresh edge; the figure printed is the median of `--runs`.

aiohttp closes a connection idle for its keep-alive timeout (EDGE_KEEPALIVE_TIMEOUT, 75 s by
default): the bench sets it to `--keepalive` (3600 s) so the connections outlive the
measurement; with the default they would all be gone 75 s after their last request.
RSS counts user-space memory (aiohttp's per-connection objects, uvloop's transports); the
kernel's socket buffers are not in it (see `ss -m`).

Usage: python bench/idle_connections.py [--connections 10000] [--runs 3] [--procs 2]
       [--workers 1] [--hold 5] [--keepalive 3600] [--event-loop uvloop|asyncio]
Run it under the heavy lock (make bench-idle).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import socket
import statistics
import sys
import tempfile
import time
import urllib.request
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from cli.embedded import Supervisor, start_valkey

_REQUEST = b"GET /healthz HTTP/1.1\r\nHost: edge\r\n\r\n"
_OPENING = 256  # connections being opened at once, per client process
_SAMPLE = 200  # connections asked a second request after the hold


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def raise_fd_limit(wanted: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss_kib(pid: int) -> int:
    """VmRSS of pid and of its descendants (the workers of `--workers N`), in KiB."""
    total = 0
    pending = [pid]
    while pending:
        p = pending.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{p}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return total


# --- client processes ----------------------------------------------------------------------


async def _answer(reader: asyncio.StreamReader) -> bool:
    """Read one response (headers with Content-Length, then the body); True on a 200."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return head.startswith(b"HTTP/1.1 200")


async def _hold(port: int, n: int, pipe: Connection) -> None:
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    gate = asyncio.Semaphore(_OPENING)

    async def one() -> None:
        async with gate:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(_REQUEST)
            if not await _answer(reader):
                raise RuntimeError("the edge did not answer 200")
            conns.append((reader, writer))

    await asyncio.gather(*(one() for _ in range(n)))
    pipe.send(len(conns))  # all open and idle
    pipe.recv()  # the parent has measured and held them: check a sample
    alive = 0
    for reader, writer in conns[:_SAMPLE]:
        try:
            writer.write(_REQUEST)
            alive += await asyncio.wait_for(_answer(reader), 10)
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            pass
    pipe.send((alive, min(_SAMPLE, len(conns))))
    pipe.recv()  # close
    for _, writer in conns:
        writer.close()


def _client(port: int, n: int, pipe: Connection) -> None:
    raise_fd_limit(n + 256)
    try:
        asyncio.run(_hold(port, n, pipe))
    except BaseException as exc:
        pipe.send(f"client failed: {exc!r}")
        raise


# --- one run -------------------------------------------------------------------------------


def _get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as r:
        status: int = r.status
        return status


def start_edge(sup: Supervisor, env: dict[str, str], port: int, workers: int, run: int) -> int:
    proc = sup.start(
        f"edge-{run}",
        [sys.executable, "-m", "cli", "edge", "--workers", str(workers)],
        env={**env, "EDGE_PORT": str(port), "EDGE_OPS_PORT": str(free_port())},
    )
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"the edge exited at start; see {sup.log_dir}/edge-{run}.log")
        try:
            if _get(f"http://127.0.0.1:{port}/healthz") == 200:
                return proc.pid
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("the edge is not ready after 60 s")
        time.sleep(0.2)


def settle(pid: int) -> int:
    """RSS once it stops moving (three reads 0.5 s apart within 64 KiB), or after 10 s."""
    last = [rss_kib(pid)]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        time.sleep(0.5)
        last = [*last[-2:], rss_kib(pid)]
        if len(last) == 3 and max(last) - min(last) <= 64:
            break
    return last[-1]


def clients(port: int, n: int, procs: int) -> tuple[list[BaseProcess], list[Connection]]:
    ctx = multiprocessing.get_context("spawn")
    ps: list[BaseProcess] = []
    pipes: list[Connection] = []
    for i in range(procs):
        share = n // procs + (1 if i < n % procs else 0)
        mine, theirs = ctx.Pipe()
        p = ctx.Process(target=_client, args=(port, share, theirs), daemon=True)
        p.start()
        ps.append(p)
        pipes.append(mine)
    return ps, pipes


def receive(pipes: list[Connection]) -> list[Any]:
    """One message from each client: a count, a pair of counts, or a failure (str)."""
    out = []
    for pipe in pipes:
        got = pipe.recv()
        if isinstance(got, str):
            raise SystemExit(got)
        out.append(got)
    return out


def one_run(
    sup: Supervisor, env: dict[str, str], args: argparse.Namespace, run: int
) -> dict[str, float]:
    port = free_port()
    pid = start_edge(sup, env, port, args.workers, run)
    try:
        ps, pipes = clients(port, 200, 1)  # warm-up
        receive(pipes)
        pipes[0].send("check")
        receive(pipes)
        pipes[0].send("close")
        ps[0].join()
        before = settle(pid)
        started = time.monotonic()
        ps, pipes = clients(port, args.connections, args.procs)
        opened = sum(receive(pipes))
        open_s = time.monotonic() - started
        after = settle(pid)
        time.sleep(args.hold)
        for pipe in pipes:
            pipe.send("check")
        checks = receive(pipes)
        alive = sum(a for a, _ in checks)
        asked = sum(b for _, b in checks)
        for pipe in pipes:
            pipe.send("close")
        for p in ps:
            p.join()
    finally:
        sup.stop(f"edge-{run}")
    per_conn = (after - before) * 1024 / opened
    print(
        f"run {run + 1}: {opened} idle connections (opened in {open_s:.1f} s), edge RSS "
        f"{before / 1024:.1f} -> {after / 1024:.1f} MiB: {per_conn / 1024:.2f} KiB per "
        f"connection; after {args.hold:g} s idle, {alive}/{asked} sampled still answer",
        flush=True,
    )
    return {"per_conn": per_conn, "before": before, "after": after, "alive": alive / asked}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--connections", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--procs", type=int, default=2, help="client processes")
    ap.add_argument("--workers", type=int, default=1, help="edge workers (RSS summed)")
    ap.add_argument("--hold", type=float, default=5.0, help="seconds idle before the check")
    ap.add_argument("--keepalive", type=float, default=3600.0, help="EDGE_KEEPALIVE_TIMEOUT")
    ap.add_argument("--event-loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = ap.parse_args()
    # The edge inherits our limit: it holds one fd per connection, plus its own.
    raise_fd_limit(args.connections + 1024)
    work = Path(tempfile.mkdtemp(prefix="filecdn-bench-idle-"))
    sup = Supervisor(work / "logs")
    try:
        env = dict(os.environ)
        if not env.get("REDIS_URL"):
            env["REDIS_URL"] = start_valkey(sup, work / "valkey", persist=False)
        env.update(
            S3_ENDPOINT=env.get("S3_ENDPOINT") or "http://127.0.0.1:9",  # never read here
            EDGE_DISK_CACHE_DIR=str(work / "edge-cache"),
            EDGE_KEEPALIVE_TIMEOUT=str(args.keepalive),
            EDGE_EVENT_LOOP=args.event_loop,
            EDGE_DRAIN_DELAY="0",
            LOG_LEVEL="warning",
        )
        print(
            f"# bench/idle_connections.py: {args.connections} connections from {args.procs} "
            f"client processes, edge --workers {args.workers} on {args.event_loop}, "
            f"EDGE_KEEPALIVE_TIMEOUT={args.keepalive:g}, {os.cpu_count()} cores",
            flush=True,
        )
        results = []
        for run in range(args.runs):
            results.append(one_run(sup, env, args, run))
        per = statistics.median(r["per_conn"] for r in results)
        print(
            f"\nedge memory per idle keep-alive connection, median of {args.runs}: "
            f"{per / 1024:.2f} KiB (goal ≤ 10 KiB): {'PASS' if per <= 10 * 1024 else 'MISS'}"
        )
    finally:
        sup.close()


if __name__ == "__main__":
    main()
