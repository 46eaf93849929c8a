"""`filecdn edge --workers N`: N edge processes on one port, and the instance's ops listener.

Each worker binds the port itself with SO_REUSEPORT, so the kernel spreads connections
across them with no accept lock and no proxy in between. The parent supervises: it restarts
a worker that dies, gives up (exit 1) if workers keep dying right after they start (a taken
port, a bad setting), forwards SIGTERM/SIGINT (a drain, see `cdn_edge.stopping`), and
serves the ops listener (`cdn_edge.ops`). Workers ask the kernel to kill them if the parent
dies (PR_SET_PDEATHSIG), so no orphan keeps serving.

Metrics: the parent allocates one shared array with a slot per worker (`cdn_edge.metrics`);
each worker counts into its slot, and /metrics sums them. When a worker dies, the parent adds
its slot's counters to what it keeps for the dead and zeroes the slot for the replacement:
the instance's counters never go backwards. (Counting happens in the slot itself, so a
worker killed with SIGKILL loses nothing it had counted.)

With `--workers 1` there is no parent: the one process serves the ops listener itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import multiprocessing
import os
import signal
import time
from collections.abc import Coroutine
from multiprocessing.process import BaseProcess
from multiprocessing.sharedctypes import RawArray
from typing import Any

import structlog

from cdn_edge import metrics
from cdn_edge.metrics import Counters
from cdn_edge.ops import Readiness, start_ops
from cdn_edge.stopping import StopSignals
from shared import logs
from shared.redis_client import create_redis, create_token_redis, has_own_token_redis
from shared.settings import Settings

log = structlog.get_logger(__name__)

_PR_SET_PDEATHSIG = 1
_EARLY_DEATH = 5.0  # a worker that dies sooner than this after starting is a startup failure
_MAX_EARLY_DEATHS = 3
_RESTART_AFTER = 0.5  # seconds
_KILL_AFTER = 5.0  # seconds past the drain's own bounds before stragglers get SIGKILL


def run_edge(settings: Settings, workers: int) -> None:
    if workers <= 1:
        status = _run(
            settings, _serve(settings, Counters(metrics.private_slot()), reuse_port=False, ops=True)
        )
    else:
        status = asyncio.run(Supervisor(settings, workers).run())
    if status:
        raise SystemExit(status)


def _serve(
    settings: Settings, counters: Counters, *, reuse_port: bool, ops: bool
) -> Coroutine[Any, Any, int]:
    from cdn_edge.process import serve

    return serve(settings, counters, reuse_port=reuse_port, ops=ops)


def _run(settings: Settings, main: Coroutine[Any, Any, int]) -> int:
    if settings.edge_event_loop == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)


def _worker(settings: Settings, index: int, shared: ctypes.Array[ctypes.c_int64]) -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    logs.configure(settings, process=f"edge-{index}")
    counters = Counters(_slot(shared, index))
    raise SystemExit(_run(settings, _serve(settings, counters, reuse_port=True, ops=False)))


def _slot(shared: ctypes.Array[ctypes.c_int64], index: int) -> memoryview:
    return memoryview(shared).cast("B").cast("q")[index * metrics.SLOT : (index + 1) * metrics.SLOT]


class Supervisor:
    def __init__(self, settings: Settings, workers: int) -> None:
        self.settings = settings
        self.workers = workers
        self.ctx = multiprocessing.get_context("spawn")  # a clean interpreter: nothing inherited
        self.shared = RawArray(ctypes.c_int64, workers * metrics.SLOT)
        self.slots = [Counters(_slot(self.shared, i)) for i in range(workers)]
        self.gone = [0] * metrics.COUNTERS  # what workers that died had counted
        self.restarts = 0
        self.running: dict[int, tuple[BaseProcess, float]] = {}
        self.stopping = False
        self.status = 0
        self.early_deaths = 0
        self.done = asyncio.Event()

    async def run(self) -> int:
        settings = self.settings
        signals = StopSignals()
        redis = create_redis(settings, timeout=settings.edge_redis_timeout)
        token_redis = (
            create_token_redis(settings, timeout=settings.edge_redis_timeout)
            if has_own_token_redis(settings)
            else None
        )
        readiness = Readiness(redis, settings.edge_redis_timeout, self.serving, token_redis)
        try:
            try:
                ops = await start_ops(settings, self.prometheus, readiness)
            except OSError as exc:
                log.error("edge ops listener cannot listen", error=str(exc))
                return 1
            try:
                for i in range(self.workers):
                    self.start(i)
                log.info(
                    "edge workers started",
                    workers=self.workers,
                    port=settings.edge_port,
                    ops=f"http://{settings.ops_host}:{settings.edge_ops_port}",
                )
                stop = asyncio.ensure_future(signals.wait())
                await asyncio.wait(
                    [stop, asyncio.ensure_future(self.done.wait())],
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if not self.stopping:  # a signal, not a give-up
                    readiness.stopping = True
                    self.stop(await stop)
                hurry = asyncio.ensure_future(signals.hurry.wait())
                hurry.add_done_callback(
                    lambda t: None if t.cancelled() else self.signal_all(signal.SIGINT)
                )
                bound = settings.edge_drain_delay + settings.edge_drain_timeout + _KILL_AFTER
                try:
                    async with asyncio.timeout(bound):
                        await self.done.wait()
                except TimeoutError:
                    log.error("edge workers still running after the drain: SIGKILL")
                    self.signal_all(signal.SIGKILL)
                    await self.done.wait()
                hurry.cancel()
                stop.cancel()
            finally:
                await ops.cleanup()
        finally:
            signals.close()
            if token_redis is not None:
                await token_redis.aclose()
            await redis.aclose()
        return self.status

    # -- workers -------------------------------------------------------------------------

    def start(self, index: int) -> None:
        if self.stopping:
            return
        proc = self.ctx.Process(
            target=_worker, args=(self.settings, index, self.shared), name=f"edge-{index}"
        )
        proc.start()
        self.running[index] = (proc, time.monotonic())
        asyncio.get_running_loop().add_reader(proc.sentinel, self.reap, index)

    def reap(self, index: int) -> None:
        proc, started = self.running.pop(index)
        asyncio.get_running_loop().remove_reader(proc.sentinel)
        proc.join()
        # Keep what it counted, and give its replacement a clean slot.
        slot = self.slots[index]
        metrics.add_into(self.gone, slot.counters())
        slot.clear()
        if self.stopping:
            if not self.running:
                self.done.set()
            return
        lived = time.monotonic() - started
        log.error("edge worker died", worker=index, exitcode=proc.exitcode, lived_s=round(lived, 1))
        self.early_deaths = self.early_deaths + 1 if lived < _EARLY_DEATH else 0
        if self.early_deaths >= _MAX_EARLY_DEATHS:
            log.error("edge workers keep dying at start; giving up")
            self.status = 1
            self.stop(signal.SIGINT)
            return
        self.restarts += 1
        asyncio.get_running_loop().call_later(_RESTART_AFTER, self.start, index)

    def stop(self, sig: signal.Signals) -> None:
        """Ask every worker to stop: SIGTERM drains, SIGINT stops without the delay."""
        self.stopping = True
        log.info("edge stopping", signal=sig.name, workers=len(self.running))
        self.signal_all(sig)
        if not self.running:
            self.done.set()

    def signal_all(self, sig: signal.Signals) -> None:
        for proc, _ in self.running.values():
            if proc.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, sig)

    # -- the ops listener's view ---------------------------------------------------------

    def serving(self) -> int:
        return sum(slot.slot[metrics.SERVING] for slot in self.slots)

    def prometheus(self) -> bytes:
        total = list(self.gone)
        for slot in self.slots:
            metrics.add_into(total, slot.slot)
        return metrics.prometheus(
            total,
            [s.slot for s in self.slots],
            [
                (
                    "filecdn_edge_worker_restarts_total",
                    "counter",
                    "Workers restarted after dying",
                    self.restarts,
                ),
                metrics.disk_cache_limit(self.settings.edge_disk_cache_bytes),
            ],
        )
