"""How an edge process (or its supervisor) is told to stop, and how quickly.

SIGTERM (Kubernetes, systemd, a supervisor) asks for a drain: keep serving for
EDGE_DRAIN_DELAY while /readyz answers 503, so load balancers stop sending traffic, then
close the listener and let the responses under way finish. SIGINT (Ctrl-C) skips the delay,
and a second signal of either kind cuts a delay short, as gunicorn does.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.requested = asyncio.Event()
        self.hurry = asyncio.Event()
        self.first: signal.Signals | None = None
        for sig in _SIGNALS:
            self._loop.add_signal_handler(sig, self._on, sig)

    def _on(self, sig: signal.Signals) -> None:
        if sig == signal.SIGINT or self.first is not None:
            self.hurry.set()
        if self.first is None:
            self.first = sig
        self.requested.set()

    async def wait(self) -> signal.Signals:
        """The first signal received, once one is."""
        await self.requested.wait()
        return self.first or signal.SIGTERM

    async def delay(self, seconds: float) -> None:
        """Sleep up to `seconds`, or less if told to hurry."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.hurry.wait()

    def close(self) -> None:
        for sig in _SIGNALS:
            self._loop.remove_signal_handler(sig)
