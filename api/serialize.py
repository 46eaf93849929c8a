"""JSON shapes of the REST API (files-api.md), from domain objects."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from shared.audit import AuditEvent, EventPage
from shared.files import Page, StoredFile
from shared.public_urls import PublicUrl, Revocation, UrlStats
from shared.settings import Settings


def unix(ts: datetime | None) -> int | None:
    return None if ts is None else int(ts.timestamp())


def file_object(f: StoredFile, settings: Settings) -> dict[str, Any]:
    url = f.public_url(settings)
    return {
        "id": f.id,
        "object": "file",
        "bytes": f.size,
        "created_at": unix(f.created_at),
        "expires_at": unix(f.expires_at),
        "filename": f.filename,
        "purpose": f.purpose,
        "status": "processed",
        "public_url": url,
        "public_url_expires_at": unix(f.url_expires_at) if url else None,
    }


def file_list(page: Page, settings: Settings) -> dict[str, Any]:
    data = [file_object(f, settings) for f in page.files]
    return {
        "object": "list",
        "data": data,
        "pagination_token": page.next_token,
        "has_more": page.has_more,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }


def public_url(p: PublicUrl) -> dict[str, Any]:
    out: dict[str, Any] = {"public_url": p.url}
    if p.expires_at is not None:
        out["expires_at"] = unix(p.expires_at)
    return out


def revocation(r: Revocation) -> dict[str, Any]:
    out: dict[str, Any] = {"id": r.file_id, "revoked": r.revoked}
    if r.revoked and r.url:
        out["public_url"] = r.url
    return out


def url_stats(u: UrlStats) -> dict[str, Any]:
    return {
        "file_id": u.file_id,
        "public_url": u.url,
        "expires_at": unix(u.expires_at),
        "created_at": unix(u.created_at),
        "hits": u.hits,
        "bytes_sent": u.bytes_sent,
        "last_accessed_at": unix(u.last_accessed_at),
    }


def audit_event(e: AuditEvent) -> dict[str, Any]:
    return {
        "id": e.id,
        "object": "audit_event",
        "kind": e.kind,
        "file_id": e.file_id,
        "created_at": unix(e.created_at),
        "actor": {"kind": e.actor_kind, "key_id": e.actor_key_id, "name": e.actor_name},
        "token_prefix": e.token_prefix,
        "old_expires_at": unix(e.old_expires_at),
        "new_expires_at": unix(e.new_expires_at),
    }


def audit_event_list(page: EventPage) -> dict[str, Any]:
    data = [audit_event(e) for e in page.events]
    return {
        "object": "list",
        "data": data,
        "has_more": page.has_more,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }
