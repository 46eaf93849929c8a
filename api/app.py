"""Builds the REST application: the whole surface in one route table."""

from __future__ import annotations

from aiohttp import web

from api import context, health, openapi, rest
from api.middleware import authentication, error_mapping, request_context
from api.request_metrics import RequestCounter
from shared.resources import Resources

MAX_REQUEST_LINE = 128 * 1024


def build_app(res: Resources, requests: RequestCounter | None = None) -> web.Application:
    """The public REST app: the Files API and `/healthz`; operations live on the ops
    listener (`api/ops.py`)."""
    app = web.Application(
        middlewares=[request_context, error_mapping, authentication],
        client_max_size=1024 * 1024,  # JSON bodies; uploads stream past this limit
        # A list query at its documented limits (a 4096-character filter, percent-encoded
        # UTF-8) fits the request line; past this, aiohttp answers a plain-text 400.
        handler_args={"max_line_size": MAX_REQUEST_LINE},
    )
    app[context.RESOURCES] = res
    app[context.REQUEST_COUNTER] = requests or RequestCounter()
    app.router.add_routes(
        [
            web.get("/healthz", health.healthz),
            web.get("/openapi.json", openapi.handler(res.settings)),
            web.post("/v1/files", rest.upload_file),
            web.get("/v1/files", rest.list_files),
            web.get("/v1/files/{file_id}", rest.get_file),
            web.delete("/v1/files/{file_id}", rest.delete_file),
            web.get("/v1/files/{file_id}/content", rest.file_content),
            web.get("/v1/files/{file_id}/public-url", rest.get_public_url),
            web.post("/v1/files/{file_id}/public-url", rest.create_public_url),
            web.post("/v1/files/{file_id}/public-url/revoke", rest.revoke_public_url),
            web.get("/v1/audit-events", rest.list_audit_events),
        ]
    )
    return app
