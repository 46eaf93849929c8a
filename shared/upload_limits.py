"""What uploads may cost one API process: how many at once, and how much memory together.

Both are per process and in memory (each API replica has its own budget, like its own
RAM); the numbers are settings. `UploadSlots` refuses at once (429: the client retries,
nothing was read); `UploadMemory` makes writers wait for memory (back-pressure: their
sockets are not read meanwhile) and refuses only after a bounded wait (503).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from dataclasses import dataclass, field

from shared.errors import TooManyRequests, Unavailable
from shared.settings import Settings

# A client refused for the number of uploads in progress may retry once one has finished.
UPLOAD_RETRY_AFTER = 1


class UploadMemory:
    """A byte budget shared by every upload buffer of the process.

    `take` waits, first come first served, until the bytes fit; `give` returns them. A
    writer holds what it has buffered plus what is on its way to S3, never more than the
    budget together. Writers that wait while holding memory could wait on each other (each
    needs more to complete a 5 MiB part): the wait is bounded, and the loser's upload is
    refused with 503 and its memory returned, which lets the others go on.
    """

    def __init__(self, limit: int, wait: float) -> None:
        self.limit = limit
        self.wait = wait
        self.in_use = 0
        self.peak = 0
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    async def take(self, n: int) -> int:
        """Reserve n bytes (at most the whole budget); returns what was reserved."""
        n = min(n, self.limit)
        if not self._waiters and self.in_use + n <= self.limit:
            self._reserve(n)
            return n
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (n, fut)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(self.wait):
                await fut
        except BaseException as exc:
            if fut.done() and not fut.cancelled():
                self.give(n)  # granted as we gave up: hand it on
            else:
                with contextlib.suppress(ValueError):  # _wake may have dropped it already
                    self._waiters.remove(entry)
                self._wake()  # the requests behind us may fit now
            if isinstance(exc, TimeoutError):
                raise Unavailable(
                    "the server has no memory free for this upload now; retry later"
                ) from None
            raise
        return n

    def give(self, n: int) -> None:
        self.in_use -= n
        self._wake()

    def _reserve(self, n: int) -> None:
        self.in_use += n
        self.peak = max(self.peak, self.in_use)

    def _wake(self) -> None:
        while self._waiters:
            n, fut = self._waiters[0]
            if fut.done():  # its waiter was cancelled and has not run yet
                self._waiters.popleft()
                continue
            if self.in_use + n > self.limit:
                return
            self._waiters.popleft()
            self._reserve(n)
            fut.set_result(None)


@dataclass
class UploadSlots:
    """Uploads in progress, per team and in total; over either limit, TooManyRequests."""

    per_team: int
    per_process: int
    total: int = 0
    _teams: dict[int, int] = field(default_factory=dict)

    def admit(self, team_id: int) -> None:
        """Count one more upload for the team; refuse it past a limit (nothing is counted)."""
        if self.total >= self.per_process:
            raise TooManyRequests(
                f"this server has {self.per_process} uploads in progress; retry shortly",
                retry_after=UPLOAD_RETRY_AFTER,
            )
        held = self._teams.get(team_id, 0)
        if held >= self.per_team:
            raise TooManyRequests(
                f"your team has {self.per_team} uploads in progress, the most allowed at once;"
                " retry when one has finished",
                retry_after=UPLOAD_RETRY_AFTER,
            )
        self._teams[team_id] = held + 1
        self.total += 1

    def release(self, team_id: int) -> None:
        held = self._teams.get(team_id, 0) - 1
        if held > 0:
            self._teams[team_id] = held
        else:
            self._teams.pop(team_id, None)
        self.total -= 1


@dataclass
class UploadLimits:
    """One per process, created with the process's resources."""

    slots: UploadSlots
    memory: UploadMemory

    @classmethod
    def from_settings(cls, settings: Settings) -> UploadLimits:
        return cls(
            UploadSlots(settings.uploads_per_team, settings.uploads_per_process),
            UploadMemory(settings.upload_memory_budget_bytes, settings.upload_memory_wait),
        )
