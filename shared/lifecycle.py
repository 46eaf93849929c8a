"""Process lifecycle shared by the long-running servers (API, edge)."""

from __future__ import annotations

import asyncio
import signal


async def until_stopped() -> None:
    """Return on SIGTERM (Kubernetes, the supervisor) or SIGINT (Ctrl-C), for a graceful stop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
