"""The REST API as the CLI needs it: aiohttp, bytes streamed both ways with progress, and
every failure turned into one `ApiError` whose message is the API's own."""

from __future__ import annotations

import asyncio
import mimetypes
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import aiohttp

from shared.pagination import DEFAULT_PAGE_SIZE

Progress = Callable[[int], None]  # called with the bytes just moved
Json = dict[str, Any]

CHUNK = 256 * 1024
PAGE_MAX = DEFAULT_PAGE_SIZE  # the API's cap on `limit` (unless LIST_LIMIT_MAX is set lower)


class ApiError(Exception):
    """The API refused the request (status set), or could not be reached (status None)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


async def _error(resp: aiohttp.ClientResponse) -> ApiError:
    """The API's message: `{"code", "error"}` here, `{"error": {"message"}}` elsewhere."""
    message = f"{resp.status} {resp.reason or ''}".strip()
    try:
        body = await resp.json(content_type=None)
    except (ValueError, aiohttp.ClientError):
        body = None
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            err = err.get("message")
        if isinstance(err, str) and err:
            message = err
    return ApiError(message, resp.status)


class FilesApi:
    """One session against `base_url` with one API key; use as an async context manager."""

    def __init__(self, base_url: str, key: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._session = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {key}"},
            # No total timeout: big files take as long as they take; a silent server does not.
            timeout=aiohttp.ClientTimeout(total=None, connect=10, sock_read=120),
        )

    async def __aenter__(self) -> FilesApi:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._session.close()

    async def _json(self, method: str, path: str, **kwargs: Any) -> Json:
        try:
            async with self._session.request(method, self.base_url + path, **kwargs) as resp:
                if resp.status >= 400:
                    raise await _error(resp)
                body: Json = await resp.json(content_type=None)
                return body
        except aiohttp.ClientConnectionError as exc:
            raise ApiError(f"cannot reach the API at {self.base_url}: {exc}") from None
        except (aiohttp.ClientError, ValueError) as exc:
            raise ApiError(f"unexpected answer from the API at {self.base_url}: {exc}") from None

    async def upload(
        self,
        path: Path,
        *,
        purpose: str | None = None,
        expires_after: int | None = None,
        progress: Progress | None = None,
    ) -> Json:
        """Stream one file as multipart; metadata goes first, as upstream requires."""
        form = aiohttp.FormData()
        if purpose is not None:
            form.add_field("purpose", purpose)
        if expires_after is not None:
            form.add_field("expires_after", str(expires_after))
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        fh = await asyncio.to_thread(path.open, "rb")
        try:
            form.add_field(
                "file", _read(fh, progress), filename=path.name, content_type=content_type
            )
            return await self._json("POST", "/v1/files", data=form)
        finally:
            fh.close()

    async def list_page(self, params: dict[str, str]) -> Json:
        return await self._json("GET", "/v1/files", params=params)

    async def iter_files(
        self,
        *,
        limit: int | None = None,
        filter: str | None = None,
        sort_by: str | None = None,
        order: str | None = None,
    ) -> AsyncIterator[Json]:
        """Every matching file (or the first `limit`), following the API's cursor."""
        params = {
            k: v for k, v in (("filter", filter), ("sort_by", sort_by), ("order", order)) if v
        }
        remaining = limit
        while remaining is None or remaining > 0:
            params["limit"] = str(min(PAGE_MAX, remaining or PAGE_MAX))
            page = await self.list_page(params)
            for f in page["data"][:remaining]:
                yield f
            if remaining is not None:
                remaining -= len(page["data"])
            token = page.get("pagination_token")
            if not page["data"] or not token or page.get("has_more") is False:
                return
            params["pagination_token"] = token

    async def get(self, file_id: str) -> Json:
        return await self._json("GET", f"/v1/files/{file_id}")

    async def delete(self, file_id: str) -> Json:
        return await self._json("DELETE", f"/v1/files/{file_id}")

    async def share(self, file_id: str, expires_after: int | None = None) -> Json:
        body = {} if expires_after is None else {"expires_after": expires_after}
        return await self._json("POST", f"/v1/files/{file_id}/public-url", json=body)

    async def public_url(self, file_id: str) -> Json:
        """The file's live URL with its hits and bytes (a 404 ApiError when it has none)."""
        return await self._json("GET", f"/v1/files/{file_id}/public-url")

    async def iter_audit_events(
        self, file_id: str | None = None, limit: int | None = None
    ) -> AsyncIterator[Json]:
        """The team's audit events (of one file, if given), newest first, page by page."""
        params = {"file_id": file_id} if file_id else {}
        remaining = limit
        while remaining is None or remaining > 0:
            params["limit"] = str(min(PAGE_MAX, remaining or PAGE_MAX))
            page = await self._json("GET", "/v1/audit-events", params=params)
            for event in page["data"][:remaining]:
                yield event
            if remaining is not None:
                remaining -= len(page["data"])
            if not page["data"] or not page.get("has_more"):
                return
            params["after"] = str(page["data"][-1]["id"])

    async def unshare(self, file_id: str) -> Json:
        return await self._json("POST", f"/v1/files/{file_id}/public-url/revoke")

    async def download(self, file_id: str, out: IO[bytes], progress: Progress | None = None) -> int:
        """Stream the file's bytes into `out`, a chunk at a time; returns the byte count."""
        written = 0
        try:
            async with self._session.get(f"{self.base_url}/v1/files/{file_id}/content") as resp:
                if resp.status >= 400:
                    raise await _error(resp)
                async for chunk in resp.content.iter_chunked(CHUNK):
                    await asyncio.to_thread(out.write, chunk)
                    written += len(chunk)
                    if progress:
                        progress(len(chunk))
        except aiohttp.ClientConnectionError as exc:
            raise ApiError(f"download interrupted: {exc}") from None
        return written


async def _read(fh: IO[bytes], progress: Progress | None) -> AsyncIterator[bytes]:
    """The file's bytes as an async stream: aiohttp sends it as the part, chunked."""
    while chunk := await asyncio.to_thread(fh.read, CHUNK):
        yield chunk
        if progress:
            progress(len(chunk))
