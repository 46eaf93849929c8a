"""`filecdn edge --workers N`: N edge processes on one port.

Each worker binds the port itself with SO_REUSEPORT, so the kernel spreads connections
across them with no accept lock and no proxy in between. The parent only supervises: it
forwards SIGTERM/SIGINT, restarts a worker that dies, and gives up (exit 1) if workers keep
dying right after they start (a taken port, a bad setting). Workers ask the kernel to kill
them if the parent dies (PR_SET_PDEATHSIG), so no orphan keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import multiprocessing
import multiprocessing.connection
import signal
import sys
import time
from multiprocessing.process import BaseProcess

import structlog

from shared import logs
from shared.settings import Settings

log = structlog.get_logger(__name__)

_PR_SET_PDEATHSIG = 1
_EARLY_DEATH = 5.0  # a worker that dies sooner than this after starting is a startup failure
_MAX_EARLY_DEATHS = 3


def run_edge(settings: Settings, workers: int) -> None:
    if workers <= 1:
        _serve(settings, reuse_port=False)
        return
    sys.exit(_supervise(settings, workers))


def _serve(settings: Settings, *, reuse_port: bool) -> None:
    from cdn_edge.process import serve

    if settings.edge_event_loop == "uvloop":
        import uvloop

        uvloop.run(serve(settings, reuse_port=reuse_port))
    else:
        asyncio.run(serve(settings, reuse_port=reuse_port))


def _worker(settings: Settings, index: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    logs.configure(settings, process=f"edge-{index}")
    _serve(settings, reuse_port=True)


def _supervise(settings: Settings, workers: int) -> int:
    ctx = multiprocessing.get_context("spawn")  # a clean interpreter: nothing inherited
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for proc in running.values():
            if proc.is_alive() and proc.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()

    def start(index: int) -> tuple[BaseProcess, float]:
        proc = ctx.Process(target=_worker, args=(settings, index), name=f"edge-{index}")
        proc.start()
        return proc, time.monotonic()

    running: dict[int, BaseProcess] = {}
    started: dict[int, float] = {}
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for i in range(workers):
        running[i], started[i] = start(i)
    log.info("edge workers started", workers=workers, port=settings.edge_port)
    early_deaths = 0
    status = 0
    while running:
        sentinels = {proc.sentinel: i for i, proc in running.items()}
        for ready in multiprocessing.connection.wait(list(sentinels), timeout=1.0):
            i = sentinels[ready]  # type: ignore[index]
            proc = running.pop(i)
            proc.join()
            if stopping:
                continue
            lived = time.monotonic() - started[i]
            log.error("edge worker died", worker=i, exitcode=proc.exitcode, lived_s=round(lived, 1))
            early_deaths = early_deaths + 1 if lived < _EARLY_DEATH else 0
            if early_deaths >= _MAX_EARLY_DEATHS:
                log.error("edge workers keep dying at start; giving up")
                status = 1
                stop(signal.SIGTERM, None)
                continue
            time.sleep(0.5)
            running[i], started[i] = start(i)
    return status
