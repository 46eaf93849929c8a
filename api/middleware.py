"""Cross-cutting concerns only: request ids and access logs, error mapping, authentication."""

from __future__ import annotations

import time
import uuid

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from api import context
from api.auth import authenticate
from api.errors import as_domain_error, error_response, rest_response
from shared import errors

log = structlog.get_logger("api.access")

# Probes: neither logged nor charted (they would drown the requests people make).
_PROBES = ("/healthz",)
# nginx's "client closed request": what the log and the counters say of a caller that left.
CLIENT_CLOSED = 499


def client_gone(request: web.Request) -> bool:
    """Whether the caller's connection is closed or closing: nobody is left to answer."""
    transport = request.transport
    return transport is None or transport.is_closing()


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """One structured log line per request, tagged with a request id (ours or the caller's)."""
    request_id = request.headers.get("X-Request-Id", "")[:64] or uuid.uuid4().hex
    structlog.contextvars.bind_contextvars(request_id=request_id)
    start = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        response.headers["X-Request-Id"] = request_id
        return response
    finally:
        elapsed = time.perf_counter() - start
        route = request.match_info.route.resource
        route_name = route.canonical if route is not None else "unmatched"
        if request.path not in _PROBES:
            request.app[context.REQUEST_COUNTER].rest(request.method, route_name, status, elapsed)
            log.info(
                "client disconnected" if status == CLIENT_CLOSED else "request",
                method=request.method,
                path=request.path,
                status=status,
                ms=round(elapsed * 1000, 1),
            )
        structlog.contextvars.unbind_contextvars("request_id")


@web.middleware
async def error_mapping(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Domain errors and aiohttp's own (404/405/413) become JSON; surprises become 500."""
    try:
        return await handler(request)
    except errors.FilecdnError as exc:
        return web.Response(status=CLIENT_CLOSED) if client_gone(request) else rest_response(exc)
    except web.HTTPNotFound:
        return error_response(
            404, "NOT_FOUND", f"no such endpoint: {request.method} {request.path}"
        )
    except web.HTTPMethodNotAllowed as exc:
        allow = ", ".join(sorted(exc.allowed_methods))
        return error_response(
            405,
            "UNIMPLEMENTED",
            f"method {request.method} not allowed here",
            headers={"Allow": allow},
        )
    except web.HTTPRequestEntityTooLarge:
        return error_response(413, "RESOURCE_EXHAUSTED", "request body too large")
    except web.HTTPException:
        raise
    except Exception as exc:
        if client_gone(request):
            # The caller left (mid-upload, mid-download): nothing to answer, nothing to log
            # but the request's line (499); the handler's cleanup has run. Whatever the
            # exception (a reset, a payload cut short), it is the departure's, not a bug's.
            return web.Response(status=CLIENT_CLOSED)
        if request.writer.output_size:
            # The answer was under way (a download whose S3 read failed mid-body): another
            # one cannot follow it. Cut the connection, so the client sees a short body,
            # never a wrong one (as the edge does); the error is logged and counted.
            err = as_domain_error(exc)
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=err.http_status)
        # A dependency that failed or timed out: 503; anything else: a logged 500.
        return rest_response(exc)


@web.middleware
async def authentication(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith("/v1/"):
        db = context.resources(request).db
        context.set_caller(request, await authenticate(db, request.headers.get("Authorization")))
    return await handler(request)
