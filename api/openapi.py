"""The REST API's OpenAPI 3.1 document, served at `GET /openapi.json`.

Built from code so that its numbers are the running server's own (the expiry range, the
upload limit, the page size, the filter's length cap and the error phrases come from the
settings and modules that enforce them). `tests/test_openapi_document.py` holds it to the
aiohttp route table both ways, and `tests/test_schemathesis.py` holds the live API to it.
Every GET is also served for HEAD (aiohttp adds the route), so the document says so.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from api.errors import PHRASES
from shared import filters, ids, pagination, rules
from shared.settings import Settings

Schema = dict[str, Any]

OPENAPI_VERSION = "3.1.0"
JSON = "application/json"
# Longer than any token the server issues.
_TOKEN_MAX = 1024
# Text that PostgreSQL can store: no NUL (the server answers 400 for one).
_NO_NUL = "^[^\\u0000]*$"


def _ref(kind: str, name: str) -> Schema:
    return {"$ref": f"#/components/{kind}/{name}"}


def _json_content(schema: Schema) -> Schema:
    return {JSON: {"schema": schema}}


def _ok(description: str, schema: Schema, **extra: Any) -> Schema:
    return {"description": description, "content": _json_content(schema), **extra}


def _errors(*statuses: int) -> dict[str, Schema]:
    return {str(s): _ref("responses", _ERROR_RESPONSES[s][0]) for s in statuses}


# status -> (component name, description). The body is always the Error shape.
_ERROR_RESPONSES = {
    400: ("BadRequest", "Bad input (INVALID_ARGUMENT or FAILED_PRECONDITION); nothing changed."),
    401: ("Unauthorized", "Missing, unknown or revoked API key."),
    404: ("NotFound", "No such file for this team (unknown, another team's, deleted, expired)."),
    408: ("RequestTimeout", "The body arrived too slowly (upload timeouts); nothing is stored."),
    413: ("PayloadTooLarge", "The body is over the size limit; nothing is stored."),
    416: ("RangeNotSatisfiable", "The Range asks only for bytes the file does not have."),
    429: ("TooManyRequests", "A limit is reached (active public URLs, concurrent uploads)."),
    503: ("Unavailable", "A dependency is down; retry later (see Retry-After when sent)."),
}


def _error_response(status: int, description: str) -> Schema:
    response: Schema = {
        "description": description,
        "content": _json_content(_ref("schemas", "Error")),
    }
    if status == 401:
        response["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
    elif status == 416:
        response["headers"] = {
            "Content-Range": {"schema": {"type": "string", "pattern": "^bytes \\*/[0-9]+$"}}
        }
    elif status in (429, 503):
        response["headers"] = {"Retry-After": {"schema": {"type": "string"}}}
    return response


_FILE_FIELDS = [
    "id", "object", "bytes", "created_at", "expires_at", "filename", "purpose", "status",
    "public_url", "public_url_expires_at",
]  # fmt: skip


def _schemas(settings: Settings) -> dict[str, Schema]:
    nullable_int = {"type": ["integer", "null"]}
    return {
        "Error": {
            "description": "Every error: upstream's shape, a gRPC status phrase and a message.",
            "type": "object",
            "required": ["code", "error"],
            "additionalProperties": False,
            "properties": {
                "code": {"type": "string", "enum": sorted(set(PHRASES.values()))},
                "error": {"type": "string"},
            },
        },
        "File": {
            "type": "object",
            "required": _FILE_FIELDS,
            "additionalProperties": False,
            "properties": {
                "id": _ref("schemas", "FileId"),
                "object": {"const": "file"},
                "bytes": {"type": "integer", "minimum": 0},
                "created_at": {"type": "integer", "description": "Unix seconds."},
                "expires_at": {
                    **nullable_int,
                    "description": "The file's own deadline (Unix seconds), null if none.",
                },
                "filename": {"type": "string"},
                "purpose": {"type": "string", "description": 'As sent; "" if absent.'},
                "status": {"const": "processed"},
                "public_url": {
                    "type": ["string", "null"],
                    "description": "The active public URL, null when none.",
                },
                "public_url_expires_at": {
                    **nullable_int,
                    "description": "The URL's effective deadline (own or inherited); null if "
                    "indefinite or no URL.",
                },
            },
        },
        "FileId": {
            "type": "string",
            "pattern": f"^{ids.FILE_ID_PATTERN}$",
        },
        "FileList": {
            "type": "object",
            "required": ["object", "data", "pagination_token", "has_more", "first_id", "last_id"],
            "additionalProperties": False,
            "properties": {
                "object": {"const": "list"},
                "data": {"type": "array", "items": _ref("schemas", "File")},
                "pagination_token": {
                    "type": ["string", "null"],
                    "description": "Pass back for the next page; null on an empty page.",
                },
                "has_more": {"type": "boolean"},
                "first_id": {"type": ["string", "null"]},
                "last_id": {"type": ["string", "null"]},
            },
        },
        "DeletedFile": {
            "type": "object",
            "required": ["id", "object", "deleted"],
            "additionalProperties": False,
            "properties": {
                "id": _ref("schemas", "FileId"),
                "object": {"const": "file"},
                "deleted": {"const": True},
            },
        },
        "PublicUrl": {
            "type": "object",
            "required": ["public_url"],
            "additionalProperties": False,
            "properties": {
                "public_url": {
                    "type": "string",
                    "description": "`{PUBLIC_BASE_URL}/{token}/{file_id}.{ext}`",
                },
                "expires_at": {
                    "type": "integer",
                    "description": "The effective deadline (Unix seconds); absent if indefinite.",
                },
            },
        },
        "UrlStats": {
            "type": "object",
            "required": [
                "file_id",
                "public_url",
                "expires_at",
                "created_at",
                "hits",
                "bytes_sent",
                "last_accessed_at",
            ],
            "additionalProperties": False,
            "properties": {
                "file_id": _ref("schemas", "FileId"),
                "public_url": {"type": "string"},
                "expires_at": {**nullable_int, "description": "Null if indefinite."},
                "created_at": {"type": "integer"},
                "hits": {"type": "integer", "minimum": 0},
                "bytes_sent": {"type": "integer", "minimum": 0},
                "last_accessed_at": nullable_int,
            },
        },
        "AuditEvent": {
            "type": "object",
            "required": [
                "id",
                "object",
                "kind",
                "file_id",
                "created_at",
                "actor",
                "token_prefix",
                "old_expires_at",
                "new_expires_at",
            ],
            "additionalProperties": False,
            "properties": {
                "id": {"type": "integer", "minimum": 1},
                "object": {"const": "audit_event"},
                "kind": {"type": "string", "description": "What changed, e.g. url.created."},
                "file_id": {"type": "string"},
                "created_at": {"type": "integer"},
                "actor": {
                    "type": "object",
                    "required": ["kind", "key_id", "name"],
                    "additionalProperties": False,
                    "properties": {
                        "kind": {"enum": ["api_key", "worker"]},
                        "key_id": nullable_int,
                        "name": {"type": ["string", "null"]},
                    },
                },
                "token_prefix": {"type": ["string", "null"]},
                "old_expires_at": nullable_int,
                "new_expires_at": nullable_int,
            },
        },
        "AuditEventList": {
            "type": "object",
            "required": ["object", "data", "has_more", "first_id", "last_id"],
            "additionalProperties": False,
            "properties": {
                "object": {"const": "list"},
                "data": {"type": "array", "items": _ref("schemas", "AuditEvent")},
                "has_more": {"type": "boolean"},
                "first_id": nullable_int,
                "last_id": nullable_int,
            },
        },
        "Revocation": {
            "type": "object",
            "required": ["id", "revoked"],
            "additionalProperties": False,
            "properties": {
                "id": {"type": "string"},
                "revoked": {"type": "boolean"},
                "public_url": {"type": "string", "description": "The URL that just died."},
            },
        },
        "Purpose": {
            "type": "string",
            "maxLength": rules.MAX_PURPOSE,
            "pattern": _NO_NUL,
            "description": "A free-form label, stored and echoed; never interpreted.",
        },
        "ExpiresAfter": {
            "type": "integer",
            "minimum": settings.expires_after_min,
            "maximum": settings.expires_after_max,
            "description": "A lifetime in seconds.",
        },
    }


_ANCHOR, _SECONDS = "expires_after[anchor]", "expires_after[seconds]"


def _upload_body(settings: Settings) -> Schema:
    expires = _ref("schemas", "ExpiresAfter")
    return {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    # A field's name travels in a part header: no control characters.
                    "propertyNames": {"pattern": "^[^\\u0000-\\u0008\\u000a-\\u001f\\u007f]*$"},
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "contentMediaType": "application/octet-stream",
                            "description": "The bytes; the part's filename= becomes `filename` "
                            f"(at most {rules.MAX_FILENAME} characters, no control characters"
                            f"). At most {settings.max_upload_bytes} bytes.",
                        },
                        "purpose": _ref("schemas", "Purpose"),
                        "expires_after": expires,
                        _ANCHOR: {"const": "created_at"},
                        _SECONDS: expires,
                    },
                    # One form or the other (or neither), and OpenAI's needs both halves.
                    "oneOf": [
                        {"properties": {_ANCHOR: False, _SECONDS: False}},
                        {"required": [_ANCHOR, _SECONDS], "properties": {"expires_after": False}},
                    ],
                },
                "encoding": {"file": {"contentType": "application/octet-stream"}},
            }
        },
    }


def _public_url_body(*, with_expiry: bool) -> Schema:
    properties: Schema = {}
    if with_expiry:
        properties["expires_after"] = {
            "anyOf": [_ref("schemas", "ExpiresAfter"), {"type": "null"}],
        }
    return {
        "required": False,
        "description": "A JSON object; a missing or empty body counts as {}.",
        "content": _json_content({"type": "object", "properties": properties}),
    }


def _file_id_param() -> Schema:
    return {"name": "file_id", "in": "path", "required": True, "schema": _ref("schemas", "FileId")}


def _query(name: str, schema: Schema, description: str) -> Schema:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _list_params() -> list[Schema]:
    return [
        _query(
            "limit",
            {"type": "integer", "minimum": 1},
            f"Page size; default {pagination.DEFAULT_PAGE_SIZE}, larger values are clamped.",
        ),
        _query("order", {"enum": ["asc", "desc"]}, "Default desc (newest first)."),
        _query("sort_by", {"enum": ["created_at", "filename", "size"]}, "Default created_at."),
        _query(
            "pagination_token",
            {"type": "string", "maxLength": _TOKEN_MAX},
            "From the previous page (or a file id).",
        ),
        _query(
            "after",
            _ref("schemas", "FileId"),
            "Continue after this file of the team (the openai SDK's cursor).",
        ),
        _query(
            "filter",
            {
                "type": "string",
                "maxLength": filters.MAX_LENGTH,
                "examples": [
                    "public_url != null",
                    "size_bytes > 1048576",
                    'name:"report" AND content_type = "application/pdf"',
                ],
            },
            'AIP-160, e.g. `public_url != null`, `size_bytes > 1048576`, `name:"report"`.',
        ),
        _query("purpose", _ref("schemas", "Purpose"), "Only files with this purpose."),
    ]


_FILE_LINKS = {
    "GetFile": {"operationId": "getFile"},
    "GetPublicUrl": {"operationId": "getPublicUrl"},
    "GetFileContent": {"operationId": "getFileContent"},
    "DeleteFile": {"operationId": "deleteFile"},
    "CreatePublicUrl": {"operationId": "createPublicUrl"},
    "RevokePublicUrl": {"operationId": "revokePublicUrl"},
}


def _links(source: str, *exclude: str) -> Schema:
    """Operations that take the file id this response (or request) names."""
    return {
        name: {**link, "parameters": {"file_id": source}}
        for name, link in _FILE_LINKS.items()
        if link["operationId"] not in exclude
    }


def _operation(
    operation_id: str, summary: str, ok: dict[str, Schema], errors: tuple[int, ...], **extra: Any
) -> Schema:
    """One operation: its success responses, then the errors it can answer."""
    return {
        "operationId": operation_id,
        "summary": summary,
        **extra,
        "responses": {**ok, **_errors(*errors)},
    }


def _paths(settings: Settings) -> dict[str, Schema]:
    file_json = _ref("schemas", "File")
    by_id = "$request.path.file_id"
    health = {"type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}}}
    return {
        "/healthz": {
            "get": _operation(
                "healthz",
                "Liveness: the process answers.",
                {"200": _ok("Alive.", health)},
                (),
                security=[],
            )
        },
        "/openapi.json": {
            "get": _operation(
                "openapi",
                "This document.",
                {"200": _ok("The OpenAPI document.", {"type": "object"})},
                (),
                security=[],
            )
        },
        "/v1/files": {
            "post": _operation(
                "uploadFile",
                "Upload a file (multipart).",
                {
                    "200": _ok(
                        "The stored file.",
                        file_json,
                        links=_links("$response.body#/id", "getPublicUrl"),
                    )
                },
                (400, 401, 408, 413, 429, 503),
                description=f"`expires_after` ({settings.expires_after_min}.."
                f"{settings.expires_after_max} seconds) is either a plain integer field or "
                "OpenAI's `expires_after[anchor]=created_at` with `expires_after[seconds]`, "
                "before or after the file part.",
                requestBody=_upload_body(settings),
            ),
            "get": _operation(
                "listFiles",
                "List the team's files, a page at a time.",
                {"200": _ok("A page of files.", _ref("schemas", "FileList"))},
                (400, 401, 503),
                parameters=_list_params(),
            ),
        },
        "/v1/files/{file_id}": {
            "parameters": [_file_id_param()],
            "get": _operation(
                "getFile",
                "One file's metadata.",
                {"200": _ok("The file.", file_json)},
                (400, 401, 404, 503),
            ),
            "delete": _operation(
                "deleteFile",
                "Delete a file; its public URL dies with it.",
                {"200": _ok("Deleted.", _ref("schemas", "DeletedFile"))},
                (400, 401, 404, 503),
            ),
        },
        "/v1/files/{file_id}/content": {
            "parameters": [_file_id_param()],
            "get": _operation(
                "getFileContent",
                "The file's bytes (a single byte range may be asked for).",
                {
                    "200": _content_response("The whole file."),
                    "206": _content_response(
                        "The requested range.",
                        {"Content-Range": {"required": True, "schema": {"type": "string"}}},
                    ),
                },
                (400, 401, 404, 416, 503),
                parameters=[
                    _query(
                        "format",
                        {"enum": ["original", "text"]},
                        "text: only for text/* files (else 400).",
                    ),
                    {
                        "name": "Range",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string"},
                        "description": "One byte range (`bytes=0-99`, `bytes=-100`, "
                        "`bytes=100-`); anything else is ignored and the whole file is sent.",
                    },
                ],
            ),
        },
        "/v1/files/{file_id}/public-url": {
            "parameters": [_file_id_param()],
            "get": _operation(
                "getPublicUrl",
                "The file's live public URL with its counts (hits, bytes sent, last access).",
                {"200": _ok("The URL and its counts.", _ref("schemas", "UrlStats"))},
                (400, 401, 404, 503),
                description="404 for every reason there is none: no URL, revoked, expired, "
                "the file gone, unknown or another team's.",
            ),
            "post": _operation(
                "createPublicUrl",
                "Create the file's public URL, or return (and re-time) the live one.",
                {
                    "200": _ok(
                        "The URL and its deadline.",
                        _ref("schemas", "PublicUrl"),
                        links=_links(by_id, "createPublicUrl"),
                    )
                },
                (400, 401, 404, 413, 429, 503),
                description="Only PNG, JPEG, MP4 and PDF files (judged by their bytes), "
                f"non-empty, at most {settings.public_url_max_bytes} bytes.",
                requestBody=_public_url_body(with_expiry=True),
            ),
        },
        "/v1/files/{file_id}/public-url/revoke": {
            "parameters": [_file_id_param()],
            "post": _operation(
                "revokePublicUrl",
                "Revoke the file's public URL at once; idempotent.",
                {
                    "200": _ok(
                        "revoked: false when there was nothing to revoke (also for an unknown "
                        "or deleted file).",
                        _ref("schemas", "Revocation"),
                        links=_links(by_id, "revokePublicUrl", "getPublicUrl"),
                    )
                },
                (400, 401, 413, 503),
                requestBody=_public_url_body(with_expiry=False),
            ),
        },
        "/v1/audit-events": {
            "get": _operation(
                "listAuditEvents",
                "The team's lifecycle changes (of one file, if given), newest first.",
                {"200": _ok("A page of events.", _ref("schemas", "AuditEventList"))},
                (400, 401, 503),
                parameters=[
                    _query(
                        "limit",
                        {"type": "integer", "minimum": 1},
                        f"Page size; default {pagination.DEFAULT_PAGE_SIZE}, larger values are "
                        "clamped.",
                    ),
                    _query(
                        "after",
                        {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
                        "The last event id seen (the previous page's last_id).",
                    ),
                    _query("file_id", _ref("schemas", "FileId"), "Only this file's events."),
                ],
            )
        },
    }


def _content_response(description: str, headers: Schema | None = None) -> Schema:
    return {
        "description": description,
        "headers": {
            "ETag": {"schema": {"type": "string"}},
            "Accept-Ranges": {"schema": {"const": "bytes"}},
            "Content-Disposition": {"schema": {"type": "string"}},
            **(headers or {}),
        },
        "content": {
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "text/plain": {"schema": {"type": "string"}},
        },
    }


def _with_head(paths: dict[str, Schema]) -> dict[str, Schema]:
    """Each GET's HEAD twin: the same parameters and statuses, without bodies or links."""
    for item in paths.values():
        if "get" not in item:
            continue
        head = copy.deepcopy(item["get"])
        head["operationId"] += "Head"
        head["summary"] = "The same as GET, without the body."
        for key, response in head["responses"].items():
            if "$ref" in response:
                name = response["$ref"].rsplit("/", 1)[-1]
                response = {"description": f"As GET's {key} ({name}), without the body."}
            response.pop("content", None)
            response.pop("links", None)
            head["responses"][key] = response
        item["head"] = head
    return paths


def document(settings: Settings) -> Schema:
    """The whole OpenAPI document for a server running with these settings."""
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "filecdn Files API",
            "version": "1",
            "summary": "xAI-compatible Files API with revocable, expiring public URLs.",
            "description": 'Errors are JSON `{"code": <gRPC status phrase>, "error": '
            "<message>}` with 400, 401, 404, 405, 408, 413, 416, 429 or 503. Another team's file "
            "answers exactly like an unknown one.",
        },
        "security": [{"bearer": []}],
        "paths": _with_head(_paths(settings)),
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key: `Authorization: Bearer <key>`.",
                }
            },
            "schemas": _schemas(settings),
            "responses": {
                name: _error_response(status, description)
                for status, (name, description) in _ERROR_RESPONSES.items()
            },
        },
    }


def handler(settings: Settings) -> Handler:
    """`GET /openapi.json`: the document, rendered once."""
    body = json.dumps(document(settings), indent=1).encode()

    async def openapi_json(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type=JSON)

    return openapi_json
