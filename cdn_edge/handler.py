"""`GET`/`HEAD /<token>/<name>`: authorise with one Redis lookup, then send the bytes.

Authorisation is decided on every request from what Redis says now: the token's record
exists, its name matches the path, and its deadline is still ahead by this process's clock.
Every way of failing that (unknown, revoked, expired, deleted, wrong name, corrupt record)
gets the same 404. Only then are bytes chosen, from the cheapest place that has them:

- small objects (EDGE_MEMORY_CACHE_OBJECT_MAX) from process memory, fetched once;
- larger ones from the slice cache (`cdn_edge.slice_cache`): the range's slices, each from
  memory, the machine's disk or one ranged S3 GET per machine, written as they come with
  the next slice loading meanwhile (a range one slice holds leaves with its head in one
  write);
- anything else (the slice cache off) streamed from S3 in chunks, with the client's
  back-pressure, and the S3 response closed the moment the client goes away (the handler
  is cancelled).

Counting happens after the answer is decided, never before authorisation: the request's
counters (`cdn_edge.metrics`) and, for a GET answered 200 or 206, its token's hits and bytes
(`cdn_edge.links`). A client that leaves is a 499: no error, no traceback.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aiohttp
import structlog
from aiohttp import hdrs, web
from multidict import CIMultiDict, CIMultiDictProxy

from cdn_edge import metrics, responses, slices
from cdn_edge.cache import MemoryCache
from cdn_edge.conditional import Conditions, Outcome, evaluate, range_applies
from cdn_edge.links import LinkCounts
from cdn_edge.lookups import RedisUnavailable, TokenLookups
from cdn_edge.metrics import Counters
from cdn_edge.origin import Origin, OriginError, origin_error
from cdn_edge.ranges import UNSATISFIABLE, content_range, parse_range
from cdn_edge.responses import RecordView, RecordViews
from cdn_edge.slice_cache import SliceCache, Version
from shared.token_cache import UrlRecord, now_ms

log = structlog.get_logger(__name__)
access = structlog.get_logger("edge.access")

_STREAM_CHUNK = 256 * 1024
# A range inside one slice up to this size is copied out and sent with its head in one write
# (a StreamResponse writes the head and the body apart: a second syscall per response).
_COPY_MAX = 256 * 1024
# A response's cache source is the worst of its slices' (a slice from S3 makes it a miss).
_SOURCE_RANK = {None: 0, "memory": 1, "disk": 2, "miss": 3}
_MAX_TOKEN = 128  # longer than any token we issue: answered 404 without a lookup


@dataclass(slots=True)  # not frozen: a frozen dataclass costs twice as much to build
class Plan:
    """What a 200 or 206 sends: decided from the headers, before any byte is looked for."""

    status: int  # 200 or 206
    headers: CIMultiDict[str] | CIMultiDictProxy[str]
    first: int  # the first byte of the object sent
    length: int  # bytes in the body
    partial: bool  # a Range applied (bytes first..first+length-1 of the object)


@dataclass(slots=True)
class Served:
    """What one request was answered, for the metrics and the access log."""

    status: int = 0  # set by a path that knows better than the response (499, a cut body)
    sent: int = 0
    cache: str | None = None  # "memory", "disk" or "miss" when content was sent
    token: str | None = None  # once the token is known to be live


class EdgeHandler:
    """The edge's request handler and the state it serves from (no authorisation state)."""

    def __init__(
        self,
        lookups: TokenLookups,
        views: RecordViews,
        origin: Origin,
        memory: MemoryCache,
        slices: SliceCache,
        counters: Counters | None,
        links: LinkCounts | None,
        access_log: bool,
    ) -> None:
        self.lookups = lookups
        self.views = views
        self.origin = origin
        self.memory = memory
        self.slices = slices
        self.counters = counters  # None: EDGE_METRICS=false, requests are not counted
        self.links = links  # None: EDGE_LINK_STATS=false
        self.access_log = access_log
        self.draining = False  # stopping: every response closes its connection

    # -- entry point ---------------------------------------------------------------------

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.path
        if path == "/healthz":
            return web.json_response({"status": "ok"})
        started = time.perf_counter_ns()
        served = Served()
        try:
            resp = await self._serve(request, path, served)
            served.status = served.status or resp.status
            if isinstance(resp, web.Response):
                if resp.body is not None:
                    served.sent = len(resp.body)  # type: ignore[arg-type]  # bytes, never a Payload
                if self.draining:
                    resp.force_close()
            return resp
        except asyncio.CancelledError:
            served.status = served.status or 499  # nginx's "client closed request"
            raise
        except Exception:
            served.status = served.status or 500  # aiohttp answers it and logs the error
            raise
        finally:
            if self.counters is not None:
                self.counters.record(served.status, served.sent, served.cache, started)
            if (
                self.links is not None
                and served.token is not None
                and (served.status == 200 or served.status == 206)
                and request.method == "GET"
            ):
                self.links.add(served.token, served.sent)
            if self.access_log:
                self._log(request, served, started)

    async def _serve(
        self, request: web.BaseRequest, path: str, served: Served
    ) -> web.StreamResponse:
        method = request.method
        if method != "GET" and method != "HEAD":
            return responses.preflight() if method == "OPTIONS" else responses.error(405)
        _, _, rest = path.partition("/")
        token, slash, name = rest.partition("/")
        if not slash or not token or not name or "/" in name or len(token) > _MAX_TOKEN:
            return responses.error(404)
        try:
            raw = await self.lookups.get(token)
        except RedisUnavailable:
            return responses.error(503)  # fail closed: never serve what we could not check
        if raw is None:
            return responses.error(404)
        try:
            view = self.views.get(raw)
        except ValueError as exc:
            log.error("corrupt token record: answering 404", error=str(exc))
            return responses.error(404)
        record = view.record
        if record.name != name or (
            record.deadline_ms is not None and now_ms() >= record.deadline_ms
        ):
            return responses.error(404)
        served.token = token
        return await self._represent(request, view, served)

    # -- HTTP semantics ------------------------------------------------------------------

    async def _represent(
        self, request: web.BaseRequest, view: RecordView, served: Served
    ) -> web.StreamResponse:
        record = view.record
        h = request.headers
        # istr names: multidict looks them up without case-folding them again.
        if_match = h.get(hdrs.IF_MATCH)
        if_none_match = h.get(hdrs.IF_NONE_MATCH)
        if_modified_since = h.get(hdrs.IF_MODIFIED_SINCE)
        if_unmodified_since = h.get(hdrs.IF_UNMODIFIED_SINCE)
        if if_match or if_none_match or if_modified_since or if_unmodified_since:
            conditions = Conditions(if_match, if_none_match, if_modified_since, if_unmodified_since)
            outcome = evaluate(conditions, record.etag, record.last_modified)
            if outcome is Outcome.NOT_MODIFIED:
                return web.Response(status=304, headers=view.headers_304)
            if outcome is Outcome.PRECONDITION_FAILED:
                return web.Response(status=412, headers=view.headers_412)

        size = record.size
        range_header = h.get(hdrs.RANGE)
        wanted = None
        if range_header is not None and range_applies(
            h.get(hdrs.IF_RANGE), record.etag, record.last_modified
        ):
            wanted = parse_range(range_header, size)
            if wanted is UNSATISFIABLE:
                return web.Response(status=416, headers=view.headers_416)
        if wanted is None:  # the whole object: its headers are rendered once per record
            headers: CIMultiDict[str] | CIMultiDictProxy[str] = view.headers_full
            plan = Plan(200, headers, 0, size, False)
        else:  # even all of it: a player asking `bytes=0-` wants a 206
            first, last = wanted
            headers = view.headers(last - first + 1, content_range(first, last, size))
            plan = Plan(206, headers, first, last - first + 1, True)
        if request.method == "HEAD":
            return web.Response(status=plan.status, headers=headers)
        return await self._send(request, record, plan, served)

    # -- bytes ---------------------------------------------------------------------------

    async def _send(
        self, request: web.BaseRequest, record: UrlRecord, plan: Plan, served: Served
    ) -> web.StreamResponse:
        key, etag, size = record.object_key, record.etag, record.size
        if self.memory.admits(size):
            body = self.memory.get(key, etag)
            served.cache = "memory"
            if body is None:
                served.cache = "miss"
                try:
                    body = await self.origin.fetch(key, size)
                except OriginError as exc:
                    log.warning("origin failed", status=exc.status, reason=exc.reason)
                    served.cache = None
                    return responses.error(exc.status)
                self.memory.put(key, etag, body)
            if plan.partial:
                body = body[plan.first : plan.first + plan.length]
            return web.Response(status=plan.status, body=body, headers=plan.headers)

        if self.slices.admits(size):
            return await self._send_slices(request, record, plan, served)

        served.cache = "miss"
        return await self._stream(request, plan, key, served)

    async def _send_slices(
        self, request: web.BaseRequest, record: UrlRecord, plan: Plan, served: Served
    ) -> web.StreamResponse:
        """The range from the slices that hold it; the head leaves once the first is in hand
        (an S3 failure before it is a clean 502/504, after it a cut connection)."""
        cache = self.slices
        version = cache.version(record.object_key, record.etag, record.size)
        pieces = list(slices.pieces(plan.first, plan.first + plan.length - 1, cache.slice_bytes))
        if len(pieces) == 1:
            index, _, count = pieces[0]
            if count <= _COPY_MAX or count == slices.length(index, record.size, cache.slice_bytes):
                return await self._send_one_slice(request, plan, version, pieces[0], served)
        resp: web.StreamResponse | None = None
        try:
            for n, (index, offset, count) in enumerate(pieces):
                if n + 1 < len(pieces):  # the next slice loads while this one is got and sent
                    cache.prefetch(version, pieces[n + 1][0])
                data, source = await cache.get(version, index)
                if _SOURCE_RANK[source] > _SOURCE_RANK[served.cache]:
                    served.cache = source
                if resp is None:
                    resp = self._stream_response(plan)
                    await resp.prepare(request)
                if count == len(data):
                    await resp.write(data)
                else:
                    await resp.write(memoryview(data)[offset : offset + count])
                served.sent += count
        except ConnectionError:  # the client went away (reset, broken pipe, closed transport)
            if resp is None:
                raise  # not a client's: nothing before the head writes to it
            served.status = 499
            return resp
        except OriginError as failure:
            return _origin_failed(request, resp, failure, served)
        assert resp is not None  # a range has at least one byte, so one piece
        return await _finish(resp, served)

    async def _send_one_slice(
        self,
        request: web.BaseRequest,
        plan: Plan,
        version: Version,
        piece: tuple[int, int, int],
        served: Served,
    ) -> web.StreamResponse:
        """A range inside one slice (a player's seek, a 64 KiB read): one response whose head
        and body leave in one write, as for objects in memory."""
        index, offset, count = piece
        try:
            data, served.cache = await self.slices.get(version, index)
        except OriginError as failure:
            return _origin_failed(request, None, failure, served)
        if count != len(data):
            data = data[offset : offset + count]  # a copy of at most _COPY_MAX bytes
        return web.Response(status=plan.status, body=data, headers=plan.headers)

    async def _stream(
        self, request: web.BaseRequest, plan: Plan, key: str, served: Served
    ) -> web.StreamResponse:
        length = plan.length
        resp: web.StreamResponse | None = None
        try:
            opened = (
                self.origin.open(key, plan.first, plan.first + length - 1)
                if plan.partial
                else self.origin.open(key)
            )
            async with opened as src:
                if src.content_length is not None and src.content_length != length:
                    raise OriginError(502, f"S3 has {src.content_length} bytes, expected {length}")
                resp = self._stream_response(plan)
                await resp.prepare(request)
                async for chunk in src.chunks(_STREAM_CHUNK):
                    await resp.write(chunk)  # waits while the client is slower than S3
                    served.sent += len(chunk)
            if served.sent != length:
                raise OriginError(502, f"S3 sent {served.sent} of {length} bytes")
        except ConnectionError:  # the client went away (aiohttp's reset is also a ClientError)
            if resp is None:
                raise  # not ours: S3 reset the connection before the head
            served.status = 499
            return resp
        except (OriginError, aiohttp.ClientError, TimeoutError) as exc:
            return _origin_failed(request, resp, origin_error(exc), served)
        assert resp is not None  # a range has at least one byte, so one piece
        return await _finish(resp, served)

    def _stream_response(self, plan: Plan) -> web.StreamResponse:
        resp = web.StreamResponse(status=plan.status, headers=plan.headers)
        if self.draining:
            resp.force_close()
        return resp

    async def evict(self, object_key: str) -> None:
        """The file was deleted: drop its bytes from both caches."""
        self.memory.evict(object_key)
        await self.slices.evict(object_key)

    async def close(self) -> None:
        await self.slices.close()

    # -- observability -------------------------------------------------------------------

    def publish_gauges(self, counters: Counters) -> None:
        """Write the caches' sizes into this process's slot (once a second)."""
        slot = counters.slot
        slot[metrics.MEMORY_CACHE_BYTES] = self.memory.bytes
        slot[metrics.MEMORY_CACHE_OBJECTS] = len(self.memory)
        slot[metrics.DISK_CACHE_BYTES] = self.slices.estimate
        slot[metrics.DISK_CACHE_FILLS] = self.slices.filling

    def _log(self, request: web.BaseRequest, served: Served, started: int) -> None:
        # Tokens are bearer secrets: the log keeps enough to correlate, not to replay.
        _, _, rest = request.path.partition("/")
        token, slash, name = rest.partition("/")
        path = f"/{token[:4]}…/{name}" if slash else request.path[:64]
        access.info(
            "request",
            method=request.method,
            path=path,
            status=served.status,
            bytes=served.sent,
            range=request.headers.get("Range"),
            cache=served.cache,
            ms=round((time.perf_counter_ns() - started) / 1e6, 2),
            peer=request.remote,
        )


def _origin_failed(
    request: web.BaseRequest,
    resp: web.StreamResponse | None,
    failure: OriginError,
    served: Served,
) -> web.StreamResponse:
    """S3 failed: before the head, a clean 502/504; after it, a cut connection, so the
    client sees a short body and never a wrong one."""
    if resp is None:
        log.warning("origin failed", status=failure.status, reason=failure.reason)
        served.cache = None
        return responses.error(failure.status)
    log.warning("origin failed mid-body", reason=failure.reason, sent=served.sent)
    served.status = failure.status
    if request.transport is not None:
        request.transport.abort()
    return resp


async def _finish(resp: web.StreamResponse, served: Served) -> web.StreamResponse:
    try:
        await resp.write_eof()
    except ConnectionError:  # the client left as the last bytes went out
        served.status = 499
    return resp
