"""REST handlers: parse the request, call the domain, shape the answer. No rules here."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Mapping
from typing import Any, TypeVar

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import BadHttpMessage, PayloadEncodingError

from api import context, serialize, upload_form
from api.body_clock import BodyClock
from api.errors import error_response
from cdn_edge import ranges
from shared import audit, files, ids, pagination, public_urls, rules
from shared.disposition import content_disposition
from shared.errors import InvalidArgument, Unavailable

T = TypeVar("T")

_READ_CHUNK = 256 * 1024
_INTEGER = re.compile(r"-?[0-9]+")


async def _parsed(step: Awaitable[T]) -> T:
    """One step of reading the multipart body: what the client malformed is a 400 (a body
    cut short is not: that client has left, and the error goes on as it is)."""
    try:
        return await step
    except PayloadEncodingError:
        raise
    except (ValueError, AssertionError, BadHttpMessage):
        raise InvalidArgument("malformed multipart body") from None


async def _read_field(part: BodyPartReader, clock: BodyClock) -> str:
    name = part.name or ""
    data = bytearray()
    while chunk := await clock.read(_parsed(part.read_chunk(1024))):
        data += chunk
        if len(data) > upload_form.FIELD_LIMIT:
            break  # decode_field refuses it; read no further
    return upload_form.decode_field(name, bytes(data), part.get_charset("utf-8"))


async def upload_file(request: web.Request) -> web.Response:
    res = context.resources(request)
    if request.content_type != "multipart/form-data":
        raise InvalidArgument("upload with Content-Type: multipart/form-data and a 'file' part")
    reader = await _parsed(request.multipart())
    clock = BodyClock(res.settings)
    form = upload_form.UploadForm(res.settings.limits)
    upload: files.Upload | None = None
    try:
        while (part := await clock.read(_parsed(reader.next()))) is not None:
            if not isinstance(part, BodyPartReader):
                raise InvalidArgument("nested multipart bodies are not supported")
            if part.name == upload_form.FILE_FIELD:
                form.start_file()
                upload = files.Upload(
                    res,
                    context.caller(request),
                    part.filename or "file",
                    part.headers.get("Content-Type"),
                )
                while chunk := await clock.read(_parsed(part.read_chunk(_READ_CHUNK))):
                    await upload.write(chunk)
                await upload.finish_bytes()
            elif form.wants(part.name):
                form.add_field(part.name or "", await _read_field(part, clock))
            else:  # read and dropped, a chunk at a time, under the same deadlines
                while await clock.read(_parsed(part.read_chunk(_READ_CHUNK))):
                    pass
        expires_after = form.expires_after()
        if upload is None:  # expires_after() has refused a form without a file part
            raise InvalidArgument("missing the 'file' part")
        stored = await upload.commit(purpose=form.purpose(), expires_after=expires_after)
    finally:
        if upload is not None:
            await upload.abort()  # no-op once committed; otherwise nothing is left behind
    return web.json_response(serialize.file_object(stored, res.settings))


def list_query(q: Mapping[str, str]) -> pagination.ListQuery:
    """The list's query string, checked: bad values are a 400 naming the parameter."""
    limit = _int_param(q, "limit")
    if limit is None:
        limit = pagination.DEFAULT_PAGE_SIZE
    order = q.get("order", "desc").lower()
    sort_by = q.get("sort_by", "created_at").lower()
    if not pagination.is_order(order):
        raise InvalidArgument(f"order must be asc or desc, got {q['order'][:40]!r}")
    if not pagination.is_sort_by(sort_by):
        raise InvalidArgument(
            f"sort_by must be created_at, filename or size, got {q['sort_by'][:40]!r}"
        )
    after = q.get("after")
    if after is not None and not ids.is_file_id(after):
        raise InvalidArgument("after must be a file id")
    purpose = q.get("purpose") or None
    return pagination.ListQuery(
        limit=limit,
        order=order,
        sort_by=sort_by,
        filter=q.get("filter") or None,
        purpose=rules.check_purpose(purpose) if purpose is not None else None,
        pagination_token=q.get("pagination_token") or None,
        after=after,
    )


def _int_param(q: Mapping[str, str], name: str) -> int | None:
    """An integer query parameter, None when absent: ASCII digits with an optional minus,
    as JSON Schema's integer in a query string (int() also takes "+1", "1_0" and other
    scripts' digits); anything else is a 400."""
    if name not in q:
        return None
    try:
        if _INTEGER.fullmatch(q[name]):
            return int(q[name])
    except ValueError:  # more digits than int() converts
        pass
    raise InvalidArgument(f"{name} must be an integer")


async def list_files(request: web.Request) -> web.Response:
    res = context.resources(request)
    page = await files.list_files(res, context.caller(request).team, list_query(request.query))
    return web.json_response(serialize.file_list(page, res.settings))


async def get_file(request: web.Request) -> web.Response:
    res = context.resources(request)
    team = context.caller(request).team
    stored = await files.get_file(res, team, request.match_info["file_id"])
    return web.json_response(serialize.file_object(stored, res.settings))


async def delete_file(request: web.Request) -> web.Response:
    res = context.resources(request)
    file_id = request.match_info["file_id"]
    await files.delete_file(res, context.caller(request), file_id)
    return web.json_response({"id": file_id, "object": "file", "deleted": True})


async def file_content(request: web.Request) -> web.StreamResponse:
    res = context.resources(request)
    fmt = request.query.get("format")
    stored = await files.content_file(
        res, context.caller(request).team, request.match_info["file_id"], fmt
    )
    # One range, judged here as the edge judges it (malformed or several: the whole file),
    # so that S3 only ever sees a range we know it can answer.
    header = request.headers.get("Range")
    span = ranges.parse_range(header, stored.size) if header is not None else None
    if span == ranges.UNSATISFIABLE:
        return error_response(
            416,
            "INVALID_ARGUMENT",
            "requested range not satisfiable",
            headers={"Content-Range": f"bytes */{stored.size}"},
        )
    resp = web.StreamResponse(status=200 if span is None else 206)
    resp.content_type = "text/plain" if fmt == "text" else "application/octet-stream"
    if fmt == "text":
        resp.charset = "utf-8"
    first, last = span or (0, stored.size - 1)
    resp.content_length = last - first + 1
    if span is not None:
        resp.headers["Content-Range"] = ranges.content_range(first, last, stored.size)
    resp.headers["Accept-Ranges"] = "bytes"
    resp.headers["ETag"] = stored.etag
    resp.headers["Content-Disposition"] = content_disposition("attachment", stored.filename)
    if request.method == "HEAD":  # the headers only: no S3 request, no body
        return resp
    s3_range = {"Range": f"bytes={first}-{last}"} if span is not None else None
    async with res.storage.open(stored.object_key, s3_range) as src:
        if src.status != resp.status:
            raise Unavailable(f"storage answered {src.status}")
        await resp.prepare(request)
        async for chunk in src.content.iter_chunked(_READ_CHUNK):
            await resp.write(chunk)
        await resp.write_eof()
        return resp


async def _json_body(request: web.Request) -> dict[str, Any]:
    """A JSON object body; a missing or empty body counts as {} (files-api.md)."""
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nested a few thousand deep
        raise InvalidArgument("request body must be a JSON object") from None
    if not isinstance(body, dict):
        raise InvalidArgument("request body must be a JSON object")
    return body


async def create_public_url(request: web.Request) -> web.Response:
    res = context.resources(request)
    body = await _json_body(request)
    expires_after = rules.json_expires_after(body.get("expires_after"))
    created = await public_urls.create(
        res, context.caller(request), request.match_info["file_id"], expires_after
    )
    return web.json_response(serialize.public_url(created))


async def revoke_public_url(request: web.Request) -> web.Response:
    res = context.resources(request)
    await _json_body(request)
    file_id = request.match_info["file_id"]
    revocation = await public_urls.revoke(res, context.caller(request), file_id)
    return web.json_response(serialize.revocation(revocation))


async def get_public_url(request: web.Request) -> web.Response:
    res = context.resources(request)
    team = context.caller(request).team
    stats = await public_urls.current(res, team, request.match_info["file_id"])
    return web.json_response(serialize.url_stats(stats))


async def list_audit_events(request: web.Request) -> web.Response:
    res = context.resources(request)
    limit = _int_param(request.query, "limit")
    page = await audit.list_events(
        res.db,
        context.caller(request).team,
        file_id=request.query.get("file_id"),  # present but empty: a 400, as documented
        after=_int_param(request.query, "after"),
        limit=pagination.DEFAULT_PAGE_SIZE if limit is None else limit,
        limit_max=res.settings.list_limit_max,
    )
    return web.json_response(serialize.audit_event_list(page))
