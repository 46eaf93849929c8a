"""Token lookups: each request's one Redis round trip, batched per event-loop tick.

Every lookup made while the loop handles one batch of socket reads goes out as a single
`MGET` on one pipelined connection, and each request still gets the answer Redis gave at
that moment: nothing about authorisation is remembered between requests. The client speaks
RESP itself (hiredis parses the replies) and hands answers to plain callbacks, because a
redis-py round trip plus a task per request costs more than the rest of a cached hit.

Fail closed: while Redis is unreachable, slow or answering errors, every lookup completes
with `RedisUnavailable` (the edge answers 503). A broken connection is replaced on the next
lookup after a short backoff, so recovery needs nothing but Redis coming back.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Callable
from typing import Any

import hiredis
import structlog
from redis.connection import SSLConnection, UnixDomainSocketConnection, parse_url

from shared.token_cache import KEY_PREFIX

log = structlog.get_logger(__name__)

_KEY_PREFIX = KEY_PREFIX.encode()
_MAX_KEYS = 512  # per MGET: bounds one reply's size and the latency of the last key in it
_BACKOFF_MIN, _BACKOFF_MAX = 0.05, 1.0


class RedisUnavailable(Exception):
    """Redis could not answer this lookup (down, slow, or an error reply)."""


Answer = bytes | None | RedisUnavailable
Callback = Callable[[Answer], None]


class _Batch:
    __slots__ = ("callbacks", "sent_at")

    def __init__(self, callbacks: list[Callback], sent_at: float) -> None:
        self.callbacks = callbacks
        self.sent_at = sent_at


class _Resp(asyncio.Protocol):
    """One pipelined connection: replies arrive in the order the commands were sent."""

    def __init__(self, owner: TokenLookup) -> None:
        self.owner = owner
        self.reader = hiredis.Reader()
        self.transport: asyncio.Transport | None = None
        # Each reply goes to the oldest entry: a future (handshake) or a batch of lookups.
        self.waiting: deque[asyncio.Future[Any] | _Batch] = deque()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while True:
            try:
                reply = self.reader.gets()
            except hiredis.ProtocolError as exc:
                self.owner._broken(self, f"protocol error: {exc}")
                return
            if reply is False:
                return
            if not self.waiting:
                self.owner._broken(self, "reply nobody asked for")
                return
            entry = self.waiting.popleft()
            if isinstance(entry, _Batch):
                self.owner._answer(entry, reply)
            elif not entry.done():
                entry.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._broken(self, f"connection lost: {exc}" if exc else "connection closed")

    def fail(self, error: RedisUnavailable) -> None:
        while self.waiting:
            entry = self.waiting.popleft()
            if isinstance(entry, _Batch):
                for cb in entry.callbacks:
                    cb(error)
            elif not entry.done():
                entry.set_exception(error)


def _command(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


class TokenLookup:
    """`get(token, callback)`: the callback receives the raw record, None, or the error."""

    def __init__(self, url: str, timeout: float) -> None:
        self._params: dict[str, Any] = parse_url(url)
        self._timeout = timeout
        self._loop = asyncio.get_running_loop()
        self._keys: list[bytes] = []
        self._callbacks: list[Callback] = []
        self._flush_scheduled = False
        self._conn: _Resp | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._backoff = _BACKOFF_MIN
        self._down_until = 0.0
        self._closed = False
        self._timer = self._loop.call_later(self._tick, self._check_timeouts)

    @property
    def _tick(self) -> float:
        return min(0.25, self._timeout / 4)

    def get(self, token: str, callback: Callback) -> None:
        """Queue one lookup; it leaves with everything else queued in this loop tick."""
        self._keys.append(_KEY_PREFIX + token.encode())
        self._callbacks.append(callback)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._keys:
            return
        conn = self._conn
        if conn is not None and conn.transport is not None:
            self._send(conn)
        elif self._closed or self._loop.time() < self._down_until:
            self._fail_queued(RedisUnavailable("redis unavailable"))
        elif self._connecting is None:
            self._connecting = self._loop.create_task(self._connect())
        # else: queued lookups leave when the connection in progress is ready (or fail)

    def _send(self, conn: _Resp) -> None:
        assert conn.transport is not None
        keys, callbacks = self._keys, self._callbacks
        self._keys, self._callbacks = [], []
        now = self._loop.time()
        out = []
        for i in range(0, len(keys), _MAX_KEYS):
            out.append(_command(b"MGET", *keys[i : i + _MAX_KEYS]))
            conn.waiting.append(_Batch(callbacks[i : i + _MAX_KEYS], now))
        conn.transport.write(b"".join(out))

    def _answer(self, batch: _Batch, reply: Any) -> None:
        if isinstance(reply, list) and len(reply) == len(batch.callbacks):
            self._backoff = _BACKOFF_MIN
            for cb, raw in zip(batch.callbacks, reply, strict=True):
                cb(raw)
            return
        log.warning("redis refused a token lookup", reply=str(reply)[:200])
        error = RedisUnavailable(str(reply))
        for cb in batch.callbacks:
            cb(error)

    def _fail_queued(self, error: RedisUnavailable) -> None:
        callbacks = self._callbacks
        self._keys, self._callbacks = [], []
        for cb in callbacks:
            cb(error)

    async def _connect(self) -> None:
        conn: _Resp | None = None
        try:
            async with asyncio.timeout(self._timeout):
                conn = await self._open()
                await self._handshake(conn)
        except (OSError, TimeoutError, RedisUnavailable, ssl.SSLError) as exc:
            if conn is not None and conn.transport is not None:
                conn.transport.abort()
            self._mark_down(f"connect failed: {exc!r}")
            self._fail_queued(RedisUnavailable("redis unavailable"))
            return
        finally:
            self._connecting = None
        if self._closed:
            assert conn.transport is not None
            conn.transport.abort()
            return
        self._conn = conn
        log.info("redis connected (token lookups)")
        if self._keys:
            self._send(conn)

    async def _open(self) -> _Resp:
        p = self._params
        cls = p.get("connection_class")
        if cls is UnixDomainSocketConnection:
            _, conn = await self._loop.create_unix_connection(lambda: _Resp(self), p["path"])
        else:
            tls = ssl.create_default_context() if cls is SSLConnection else None
            _, conn = await self._loop.create_connection(
                lambda: _Resp(self), p.get("host", "localhost"), p.get("port", 6379), ssl=tls
            )
        return conn

    async def _handshake(self, conn: _Resp) -> None:
        assert conn.transport is not None
        commands: list[bytes] = []
        if p := self._params.get("password"):
            user = self._params.get("username")
            args = [b"AUTH", *([user.encode()] if user else []), p.encode()]
            commands.append(_command(*args))
        if db := int(self._params.get("db") or 0):
            commands.append(_command(b"SELECT", str(db).encode()))
        futures: list[asyncio.Future[Any]] = []
        for cmd in commands:
            fut = self._loop.create_future()
            conn.waiting.append(fut)
            futures.append(fut)
            conn.transport.write(cmd)
        for fut in futures:
            reply = await fut
            if isinstance(reply, hiredis.ReplyError):
                raise RedisUnavailable(f"handshake refused: {reply}")

    def _mark_down(self, why: str) -> None:
        self._down_until = self._loop.time() + self._backoff
        self._backoff = min(self._backoff * 2, _BACKOFF_MAX)
        log.warning("redis unavailable for token lookups", error=why)

    def _broken(self, conn: _Resp, why: str) -> None:
        """Drop a connection: its unanswered lookups fail (503), the next one reconnects."""
        if self._conn is conn:
            self._conn = None
            if not self._closed:
                self._mark_down(why)
        if conn.transport is not None and not conn.transport.is_closing():
            conn.transport.abort()
        conn.transport = None
        conn.fail(RedisUnavailable(why))

    def _check_timeouts(self) -> None:
        conn = self._conn
        if conn is not None and conn.waiting:
            oldest = conn.waiting[0]
            if isinstance(oldest, _Batch) and self._loop.time() - oldest.sent_at > self._timeout:
                self._broken(conn, f"no reply within {self._timeout}s")
        if not self._closed:
            self._timer = self._loop.call_later(self._tick, self._check_timeouts)

    async def close(self) -> None:
        self._closed = True
        self._timer.cancel()
        if self._connecting is not None:
            self._connecting.cancel()
        if self._conn is not None:
            self._broken(self._conn, "closing")
        self._fail_queued(RedisUnavailable("closing"))
