"""HTTP/1.1 for the edge: one asyncio protocol per connection, no framework in between.

The edge answers GET, HEAD and OPTIONS and never reads a request body, so the protocol is
small: a strict header-block parser, keep-alive, pipelining (one request at a time per
connection, in order), back-pressure (`drain`), and timeouts for idle and slow clients.
A cached hit runs from `data_received` to `transport.writelines` in plain callbacks, with
no task, future or framework objects per request: that is where the edge's requests/s come
from. Anything that needs to wait (S3) runs as a task that the connection cancels if the
client goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable
from urllib.parse import unquote_to_bytes

import structlog

from cdn_edge.conditional import Conditions

log = structlog.get_logger(__name__)

Body = bytes | bytearray | memoryview

MAX_HEAD = 16 * 1024  # request line + headers; larger gets 431
MAX_HEADERS = 100
MAX_PIPELINED = 64 * 1024  # unread bytes buffered behind the current request
HEADER_TIMEOUT = 30.0  # a started request must be complete within this (slowloris)
_TCHAR = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

REASONS = {
    200: "OK",
    204: "No Content",
    206: "Partial Content",
    304: "Not Modified",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    412: "Precondition Failed",
    416: "Range Not Satisfiable",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
}


class HttpError(Exception):
    """A request the edge will not parse; answered with `status` and the connection closed."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class Request:
    """One parsed request, and what was answered (for metrics and the access log)."""

    __slots__ = (
        "cache",
        "conditions",
        "has_body",
        "keep_alive",
        "method",
        "path",
        "range",
        "sent",
        "started",
        "status",
        "version11",
    )

    def __init__(self, method: str, path: str, version11: bool) -> None:
        self.method = method
        self.path = path  # percent-decoded, without the query string
        self.version11 = version11
        self.keep_alive = version11
        self.has_body = False
        self.range: str | None = None
        self.conditions: Conditions | None = None
        self.started = time.perf_counter()
        self.status = 0
        self.sent = 0  # body bytes handed to the socket
        self.cache: str | None = None  # "memory", "disk" or "miss" when content was sent


_CONDITIONAL = {
    b"if-match": "if_match",
    b"if-none-match": "if_none_match",
    b"if-modified-since": "if_modified_since",
    b"if-unmodified-since": "if_unmodified_since",
    b"if-range": "if_range",
}


def parse_head(head: bytes) -> Request:
    """Parse a request line and header block (without the final CRLF CRLF), strictly."""
    crlf = head.count(b"\r\n")
    if head.count(b"\n") != crlf or head.count(b"\r") != crlf or b"\x00" in head:
        raise HttpError(400)  # bare CR/LF or NUL: a classic request-smuggling vector
    lines = head.split(b"\r\n")
    if len(lines) > MAX_HEADERS + 1:
        raise HttpError(431)
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        raise HttpError(400)
    method_b, target, version = parts
    if version == b"HTTP/1.1":
        v11 = True
    elif version == b"HTTP/1.0":
        v11 = False
    elif version.startswith(b"HTTP/") and version[5:6].isdigit():
        raise HttpError(505)
    else:
        raise HttpError(400)
    if not method_b or method_b.translate(None, _TCHAR):
        raise HttpError(400)
    req = Request(method_b.decode("ascii"), _path(target, method_b), v11)
    hosts = 0
    lengths: set[bytes] = set()
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name.translate(None, _TCHAR):
            raise HttpError(400)  # also rejects obs-fold and "name :" (RFC 9112 §5.1)
        name = name.lower()
        if name == b"host":
            hosts += 1
        elif name == b"range":
            req.range = value.strip(b" \t").decode("latin-1")
        elif name in _CONDITIONAL:
            if req.conditions is None:
                req.conditions = Conditions()
            setattr(req.conditions, _CONDITIONAL[name], value.strip(b" \t").decode("latin-1"))
        elif name == b"connection":
            for token in value.lower().split(b","):
                token = token.strip(b" \t")
                if token == b"close":
                    req.keep_alive = False
                elif token == b"keep-alive" and not v11:
                    req.keep_alive = True
        elif name == b"content-length":
            lengths.update(v.strip(b" \t") for v in value.split(b","))
        elif name == b"transfer-encoding":
            req.has_body = True
    if v11 and hosts != 1 or hosts > 1:
        raise HttpError(400)  # RFC 9112 §3.2
    if lengths:
        if len(lengths) != 1 or not all(v.isdigit() for v in lengths):
            raise HttpError(400)
        if int(next(iter(lengths))) > 0:
            req.has_body = True
    if req.has_body:
        req.keep_alive = False  # never parse a body: answer, then close
    return req


def _path(target: bytes, method: bytes) -> str:
    if target.startswith((b"http://", b"https://")):  # absolute-form (RFC 9112 §3.2.2)
        slash = target.find(b"/", target.index(b"//") + 2)
        target = b"/" if slash < 0 else target[slash:]
    elif target == b"*" and method == b"OPTIONS":
        return "*"
    elif not target.startswith(b"/"):
        raise HttpError(400)
    path = target.partition(b"?")[0].partition(b"#")[0]
    if b"%" in path:
        path = unquote_to_bytes(path)
    return path.decode("latin-1")


Handler = Callable[["Connection", Request], None]
DoneHook = Callable[[Request], None]


class Connection(asyncio.Protocol):
    """One client connection. The handler answers through `send` or `start`/`write`/`finish`."""

    __slots__ = (
        "_buf",
        "_drain",
        "_eof",
        "_head_since",
        "_in_next",
        "_paused",
        "_reading",
        "closed",
        "current",
        "last_active",
        "server",
        "task",
        "transport",
    )

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self._buf = b""
        self.current: Request | None = None
        self.task: asyncio.Task[None] | None = None  # the current response, when it waits
        self.closed = False
        self._eof = False
        self._in_next = False
        self._paused = False
        self._reading = True
        self._drain: asyncio.Future[None] | None = None
        self.last_active = server.loop.time()
        self._head_since = self.last_active

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.connections.add(self)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        if self.task is not None:
            self.task.cancel()  # stops an S3 stream at once, releasing its connection
        if self._drain is not None and not self._drain.done():
            self._drain.set_exception(ConnectionResetError("client went away"))
        if self.current is not None and self.current.status == 0:
            self.current.status = 499  # nginx's "client closed request", for the log only
        self._buf = b""

    def data_received(self, data: bytes) -> None:
        self.last_active = now = self.server.loop.time()
        if self._buf:
            self._buf += data
        else:
            self._buf = data
            self._head_since = now
        if self.current is None:
            self._next()
        elif len(self._buf) > MAX_PIPELINED and self._reading and self.transport is not None:
            self.transport.pause_reading()
            self._reading = False

    def eof_received(self) -> bool:
        self._eof = True
        return self.current is not None  # finish the response under way, then close

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self.last_active = self.server.loop.time()
        if self._drain is not None:
            waiter, self._drain = self._drain, None
            if not waiter.done():
                waiter.set_result(None)

    # -- requests ------------------------------------------------------------------------

    def _next(self) -> None:
        self._in_next = True
        try:
            while self.current is None and not self.closed:
                buf = self._buf
                if buf.startswith(b"\r\n"):  # RFC 9112 §2.2: ignore leading empty lines
                    buf = self._buf = buf.lstrip(b"\r\n")
                if not buf:
                    if self._eof:
                        self.close()
                    return
                end = buf.find(b"\r\n\r\n", 0, MAX_HEAD + 4)
                if end < 0:
                    if len(buf) > MAX_HEAD:
                        self._reject(431)
                    elif self._eof:
                        self.close()
                    return
                self._buf = buf[end + 4 :]
                try:
                    req = parse_head(buf[:end])
                except HttpError as exc:
                    self._reject(exc.status)
                    return
                self.current = req
                if not self._reading and self.transport is not None:
                    self.transport.resume_reading()
                    self._reading = True
                try:
                    self.server.handler(self, req)
                except Exception:
                    log.exception("request handler failed", path=req.path)
                    if req.status == 0:
                        self.send(req, 500, self.server.error_head(500), self.server.error_body(500))
                    else:
                        self.abort()
        finally:
            self._in_next = False

    def _reject(self, status: int) -> None:
        req = Request("-", "-", True)
        req.keep_alive = False
        self.current = req
        self.send(req, status, self.server.error_head(status), self.server.error_body(status))

    def tail(self, req: Request) -> bytes:
        """Date, Connection and the blank line that end every response head."""
        return self.server.tail(req.keep_alive and not self._eof, req.version11)

    # -- responses -----------------------------------------------------------------------

    def send(self, req: Request, status: int, head: bytes, body: Body | None = None) -> None:
        """A whole response: `head` is the status line and headers without Date/Connection."""
        req.status = status
        if self.closed or self.transport is None:
            self.finish(req)
            return
        if body is None:
            self.transport.writelines((head, self.tail(req)))
        else:
            self.transport.writelines((head, self.tail(req), body))
            req.sent = memoryview(body).nbytes
        self.finish(req)

    def start(self, req: Request, status: int, head: bytes) -> None:
        """Send the head of a response whose body follows with `write`."""
        req.status = status
        if not self.closed and self.transport is not None:
            self.transport.writelines((head, self.tail(req)))

    def write(self, req: Request, data: Body) -> None:
        if self.closed or self.transport is None:
            raise ConnectionResetError("client went away")
        self.transport.write(data)
        req.sent += memoryview(data).nbytes

    async def drain(self) -> None:
        """Wait while the client is slower than we write (back-pressure)."""
        if self.closed:
            raise ConnectionResetError("client went away")
        if self._paused:
            if self._drain is None:
                self._drain = self.server.loop.create_future()
            await self._drain

    def finish(self, req: Request) -> None:
        """The response is complete: account for it, then read the next request (or close)."""
        if req is not self.current:
            return
        self.current = None
        self.task = None
        now = self.server.loop.time()
        self.last_active = self._head_since = now
        self.server.done(req)
        if self.closed:
            return
        if not req.keep_alive or self._eof:
            self.close()
        elif self._buf and not self._in_next:
            self._next()

    def close(self) -> None:
        """Close after what was written has been sent."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        """Close now: used when a response cannot be completed (the client sees it cut)."""
        if self.transport is not None:
            self.transport.abort()

    def waiting_for_head(self, now: float) -> float:
        """How long an incomplete request has been arriving (0 when none is)."""
        return now - self._head_since if self._buf and self.current is None else 0.0

    def buffered(self) -> int:
        return 0 if self.transport is None else self.transport.get_write_buffer_size()


class HttpServer:
    """Listening socket, connection set, Date cache, timeouts and graceful shutdown."""

    def __init__(
        self,
        handler: Handler,
        done: DoneHook,
        error_head: Callable[[int], bytes],
        error_body: Callable[[int], bytes],
        keepalive_timeout: float,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.handler = handler
        self.done = done
        self.error_head = error_head
        self.error_body = error_body
        self.keepalive_timeout = keepalive_timeout
        self.connections: set[Connection] = set()
        self._server: asyncio.Server | None = None
        self._tails: tuple[bytes, bytes, bytes] = (b"", b"", b"")
        self._date_second = -1
        self._sweeper: asyncio.TimerHandle | None = None
        self._buffered: dict[Connection, int] = {}

    def tail(self, keep_alive: bool, version11: bool) -> bytes:
        now = int(time.time())
        if now != self._date_second:
            self._date_second = now
            date = b"Date: " + time.strftime(
                "%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now)
            ).encode() + b"\r\n"
            self._tails = (
                date + b"\r\n",
                date + b"Connection: close\r\n\r\n",
                date + b"Connection: keep-alive\r\n\r\n",
            )
        if not keep_alive:
            return self._tails[1]
        return self._tails[0] if version11 else self._tails[2]

    async def start(self, host: str, port: int, *, reuse_port: bool) -> None:
        self._server = await self.loop.create_server(
            lambda: Connection(self), host, port, reuse_port=reuse_port, backlog=4096
        )
        self._sweeper = self.loop.call_later(1.0, self._sweep)

    def _sweep(self) -> None:
        """Close connections that are idle too long, or too slow to send a request."""
        now = self.loop.time()
        buffered: dict[Connection, int] = {}
        for conn in list(self.connections):
            size = conn.buffered()
            if size:  # a client still downloading counts as active while it makes progress
                buffered[conn] = size
                if size != self._buffered.get(conn):
                    conn.last_active = now
            if conn.current is not None:
                continue
            if conn.waiting_for_head(now) > HEADER_TIMEOUT or (
                now - conn.last_active > self.keepalive_timeout
            ):
                conn.abort()
        self._buffered = buffered
        self._sweeper = self.loop.call_later(1.0, self._sweep)

    async def shutdown(self, grace: float) -> None:
        """Stop accepting, let responses under way finish (up to `grace`), then close all."""
        if self._server is not None:
            self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        deadline = self.loop.time() + grace
        while self.loop.time() < deadline:
            for conn in list(self.connections):
                if conn.current is None and not conn.buffered():
                    conn.close()
            if not self.connections:
                break
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.abort()
        if self._server is not None:
            await self._server.wait_closed()
