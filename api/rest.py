"""REST handlers: parse the request, call the domain, shape the answer. No rules here."""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import BodyPartReader, web

from api import context, serialize
from api.errors import error_response
from shared import audit, files, pagination, public_urls, rules
from shared.disposition import content_disposition
from shared.errors import InvalidArgument, Unavailable

_FIELD_LIMIT = 4096  # bytes in a non-file multipart field
_READ_CHUNK = 256 * 1024
_SINGLE_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_EXPIRY_FIELDS = ("expires_after", "expires_after[anchor]", "expires_after[seconds]")


async def _read_field(part: BodyPartReader) -> str:
    data = bytearray()
    while chunk := await part.read_chunk(1024):
        data += chunk
        if len(data) > _FIELD_LIMIT:
            raise InvalidArgument(f"form field {part.name!r} is too long")
    try:
        return data.decode(part.get_charset("utf-8"))
    except (UnicodeDecodeError, LookupError):
        raise InvalidArgument(f"form field {part.name!r} is not valid text") from None


async def upload_file(request: web.Request) -> web.Response:
    res = context.resources(request)
    if request.content_type != "multipart/form-data":
        raise InvalidArgument("upload with Content-Type: multipart/form-data and a 'file' part")
    try:
        reader = await request.multipart()
    except (ValueError, AssertionError):
        raise InvalidArgument("malformed multipart body") from None
    fields: dict[str, str] = {}
    upload: files.Upload | None = None
    try:
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise InvalidArgument("nested multipart bodies are not supported")
            if part.name == "file":
                if upload is not None:
                    raise InvalidArgument("send exactly one 'file' part")
                early = rules.upload_expires_after(fields)
                if early is not None:  # fail before streaming 50 MiB for nothing
                    rules.check_expires_after(res.settings.limits, early)
                upload = files.Upload(
                    res,
                    context.caller(request),
                    part.filename or "file",
                    part.headers.get("Content-Type"),
                )
                while chunk := await part.read_chunk(_READ_CHUNK):
                    await upload.write(chunk)
                await upload.finish_bytes()
            elif part.name in ("purpose", *_EXPIRY_FIELDS):
                if part.name in fields:
                    raise InvalidArgument(f"form field {part.name!r} given twice")
                fields[part.name] = await _read_field(part)
            else:
                await part.release()  # unknown fields are ignored, as the openai SDK expects
        if upload is None:
            raise InvalidArgument("missing the 'file' part")
        stored = await upload.commit(
            purpose=fields.get("purpose", ""), expires_after=rules.upload_expires_after(fields)
        )
    finally:
        if upload is not None:
            await upload.abort()  # no-op once committed; otherwise nothing is left behind
    return web.json_response(serialize.file_object(stored, res.settings))


def _int_param(request: web.Request, name: str) -> int | None:
    """An integer query parameter, None when absent; present but not an integer: 400."""
    if name not in request.query:
        return None
    try:
        return int(request.query[name])
    except ValueError:
        raise InvalidArgument(f"{name} must be an integer") from None


def _list_query(request: web.Request) -> pagination.ListQuery:
    q = request.query
    limit = _int_param(request, "limit")
    if limit is None:
        limit = pagination.DEFAULT_PAGE_SIZE
    order = q.get("order", "desc").lower()
    sort_by = q.get("sort_by", "created_at").lower()
    if not pagination.is_order(order):
        raise InvalidArgument(f"order must be asc or desc, got {q['order']!r}")
    if not pagination.is_sort_by(sort_by):
        raise InvalidArgument(f"sort_by must be created_at, filename or size, got {q['sort_by']!r}")
    return pagination.ListQuery(
        limit=limit,
        order=order,
        sort_by=sort_by,
        filter=q.get("filter") or None,
        purpose=q.get("purpose") or None,
        pagination_token=q.get("pagination_token") or None,
        after=q.get("after") or None,
    )


async def list_files(request: web.Request) -> web.Response:
    res = context.resources(request)
    page = await files.list_files(res, context.caller(request).team, _list_query(request))
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


def _range_header(request: web.Request) -> str | None:
    """A single byte range to pass to S3; anything else is ignored (RFC 9110 allows it)."""
    value = request.headers.get("Range", "").strip()
    m = _SINGLE_RANGE.match(value)
    return value if m and (m.group(1) or m.group(2)) else None


async def file_content(request: web.Request) -> web.StreamResponse:
    res = context.resources(request)
    fmt = request.query.get("format")
    stored = await files.content_file(
        res, context.caller(request).team, request.match_info["file_id"], fmt
    )
    byte_range = _range_header(request)
    async with res.storage.open(
        stored.object_key, {"Range": byte_range} if byte_range else None
    ) as src:
        if src.status == 416:
            return error_response(
                416,
                "INVALID_ARGUMENT",
                "requested range not satisfiable",
                headers={"Content-Range": f"bytes */{stored.size}"},
            )
        if src.status not in (200, 206):
            raise Unavailable(f"storage answered {src.status}")
        resp = web.StreamResponse(status=src.status)
        resp.content_type = "text/plain" if fmt == "text" else "application/octet-stream"
        if fmt == "text":
            resp.charset = "utf-8"
        resp.content_length = src.content_length
        if "Content-Range" in src.headers:
            resp.headers["Content-Range"] = src.headers["Content-Range"]
        resp.headers["Accept-Ranges"] = "bytes"
        resp.headers["ETag"] = stored.etag
        resp.headers["Content-Disposition"] = content_disposition("attachment", stored.filename)
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
    except (ValueError, UnicodeDecodeError):
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
    limit = _int_param(request, "limit")
    page = await audit.list_events(
        res.db,
        context.caller(request).team,
        file_id=request.query.get("file_id") or None,
        after=_int_param(request, "after"),
        limit=pagination.DEFAULT_PAGE_SIZE if limit is None else limit,
        limit_max=res.settings.list_limit_max,
    )
    return web.json_response(serialize.audit_event_list(page))
