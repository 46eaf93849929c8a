"""gRPC `xai_api.Files` for the official xai-sdk: parse the messages, call the domain, shape
the answer. The servicer and messages are the SDK's own generated code (no copied .proto);
the rules live in `shared/` and are the ones REST calls.
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable, Coroutine
from datetime import datetime
from typing import Any, TypeVar

import grpc
import structlog
from xai_sdk.proto import files_pb2, files_pb2_grpc

from api.auth import authenticate
from api.body_clock import BodyClock
from api.errors import grpc_answer
from api.request_metrics import RequestCounter
from shared import files, pagination, public_urls, rules
from shared.actors import Caller
from shared.errors import InvalidArgument, Unavailable
from shared.resources import Resources
from shared.settings import Settings

log = structlog.get_logger("api.grpc")

MiB = 1024 * 1024
# RetrieveFileContent chunk size: the proto allows up to 5 MB, the SDK uploads 3 MiB. The
# message limits are GRPC_MAX_MESSAGE_BYTES (settings): above this, with room to spare.
CONTENT_CHUNK = 3 * MiB
_S3_READ = 256 * 1024

_SORT_BY: dict[int, pagination.SortBy] = {
    files_pb2.FILES_SORT_BY_CREATED_AT: "created_at",
    files_pb2.FILES_SORT_BY_FILENAME: "filename",
    files_pb2.FILES_SORT_BY_SIZE: "size",
}
_ORDER: dict[int, pagination.Order] = {files_pb2.ASCENDING: "asc", files_pb2.DESCENDING: "desc"}
_FORMAT = {
    files_pb2.DOWNLOAD_FORMAT_UNKNOWN: None,
    files_pb2.DOWNLOAD_FORMAT_ORIGINAL: "original",
    files_pb2.DOWNLOAD_FORMAT_TEXT: "text",
}

S = TypeVar("S", bound="FilesService")
UnaryHandler = Callable[[S, Any, Any], Coroutine[Any, Any, Any]]
StreamHandler = Callable[[S, Any, Any], AsyncIterator[Any]]


# --- messages -------------------------------------------------------------------------------


def set_time(field: Any, ts: datetime) -> None:
    """Fill a Timestamp field (which marks it present) in whole seconds, like REST's times."""
    field.FromSeconds(int(ts.timestamp()))


def file_message(f: files.StoredFile, settings: Settings) -> Any:
    """The `File` message; optional fields are set only when they have a value."""
    msg = files_pb2.File(id=f.id, filename=f.filename, size=f.size)
    set_time(msg.created_at, f.created_at)
    if f.expires_at is not None:
        set_time(msg.expires_at, f.expires_at)
    url = f.public_url(settings)
    if url:
        msg.public_url = url
        if f.url_expires_at is not None:
            set_time(msg.public_url_expires_at, f.url_expires_at)
    return msg


def list_query(request: Any) -> pagination.ListQuery:
    """ListFilesRequest -> ListQuery. Proto3 cannot leave `order` unset: 0 is ascending."""
    if request.limit < 0:
        raise InvalidArgument(f"limit must not be negative, got {request.limit}")
    if request.order not in _ORDER:
        raise InvalidArgument(f"order must be ASCENDING or DESCENDING, got {request.order}")
    sort_by: pagination.SortBy = "created_at"
    if request.HasField("sort_by"):
        if request.sort_by not in _SORT_BY:
            raise InvalidArgument(f"sort_by must be a FilesSortBy value, got {request.sort_by}")
        sort_by = _SORT_BY[request.sort_by]
    token = request.pagination_token if request.HasField("pagination_token") else ""
    flt = request.filter if request.HasField("filter") else ""
    return pagination.ListQuery(
        # `limit` 0 is proto3's "unset": the contract's default, as REST without `limit`.
        limit=request.limit or pagination.DEFAULT_PAGE_SIZE,
        order=_ORDER[request.order],
        sort_by=sort_by,
        filter=flt or None,
        pagination_token=token or None,
    )


def download_format(request: Any) -> str | None:
    if not request.HasField("format"):
        return None
    if request.format not in _FORMAT:
        raise InvalidArgument(f"format must be ORIGINAL or TEXT, got {request.format}")
    return _FORMAT[request.format]


def _metadata(context: Any, name: str) -> str | None:
    """The first value of a metadata key (gRPC lowercases keys on the wire)."""
    for key, value in context.invocation_metadata() or ():
        if key == name:
            return str(value)
    return None


# --- one log line per RPC, errors mapped once -----------------------------------------------


def _request_id(context: Any) -> str:
    return (_metadata(context, "x-request-id") or "")[:64] or uuid.uuid4().hex


class _Call:
    """One RPC, around its handler: binds its request id, turns an exception into its
    status (`context.abort`), and logs one line with the outcome and the time taken."""

    def __init__(self, method: str, context: Any, requests: RequestCounter) -> None:
        self.method = method
        self.context = context
        self.requests = requests
        self.code = grpc.StatusCode.OK
        self.started = time.perf_counter()
        structlog.contextvars.bind_contextvars(request_id=_request_id(context))

    async def __aenter__(self) -> _Call:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        try:
            if isinstance(exc, asyncio.CancelledError):
                self.code = grpc.StatusCode.CANCELLED
            elif isinstance(exc, Exception) and not isinstance(exc, grpc.aio.AbortError):
                self.code, details, trailers = grpc_answer(exc)
                await self.context.abort(self.code, details, trailers)  # raises AbortError
        finally:
            elapsed = time.perf_counter() - self.started
            self.requests.grpc(self.method, self.code, elapsed)
            log.info("rpc", method=self.method, code=self.code.name, ms=round(elapsed * 1000, 1))
            structlog.contextvars.unbind_contextvars("request_id")


def unary(fn: UnaryHandler[S]) -> UnaryHandler[S]:
    @functools.wraps(fn)
    async def handler(self: S, request: Any, context: Any) -> Any:
        async with _Call(fn.__name__, context, self.requests):
            return await fn(self, request, context)

    return handler


def server_stream(fn: StreamHandler[S]) -> StreamHandler[S]:
    # An async generator itself, so that grpc.aio serves it as a response stream.
    @functools.wraps(fn)
    async def handler(self: S, request: Any, context: Any) -> AsyncIterator[Any]:
        async with _Call(fn.__name__, context, self.requests):
            async for item in fn(self, request, context):
                yield item

    return handler


class _ClientGone(Exception):
    """The client cancelled an upload; nobody is left to answer."""


def _settle(task: asyncio.Task[Any]) -> None:
    """Mark a finished upload's outcome as seen: after a cancel, nobody awaits it."""
    if not task.cancelled():
        task.exception()  # retrieved: no "exception was never retrieved" noise


# --- the service ----------------------------------------------------------------------------


class FilesService(files_pb2_grpc.FilesServicer):  # type: ignore[misc]  # xai_sdk is untyped
    """The seven RPCs of `xai_api.Files`; every one authenticates first."""

    def __init__(self, res: Resources, requests: RequestCounter | None = None) -> None:
        self.res = res
        self.requests = requests or RequestCounter()
        self._uploads: set[asyncio.Task[tuple[files.Upload, files.StoredFile]]] = set()
        self._retractions: set[asyncio.Task[None]] = set()

    async def _caller(self, context: Any) -> Caller:
        return await authenticate(self.res.db, _metadata(context, "authorization"))

    @unary
    async def UploadFile(self, request_iterator: AsyncIterable[Any], context: Any) -> Any:
        # The key first: no message of the stream is read before it is valid (grpc itself
        # holds at most a flow-control window of it, each message under the size limit).
        caller = await self._caller(context)
        # grpc.aio ends the request stream (as if complete) and then cancels this task when
        # the client cancels. A cancelled S3 call can leave a multipart upload open, so the
        # upload runs in its own task, which is never cancelled, and aborts if we are.
        gone = asyncio.Event()
        receiving = asyncio.create_task(self._receive_upload(caller, request_iterator, gone))
        self._uploads.add(receiving)  # a strong reference until it ends
        receiving.add_done_callback(self._uploads.discard)
        receiving.add_done_callback(_settle)
        try:
            _, stored = await asyncio.shield(receiving)
        except asyncio.CancelledError:
            gone.set()
            if receiving.done() and not receiving.cancelled() and not receiving.exception():
                # Committed just before the cancel reached us: the client never hears of it.
                upload, _ = receiving.result()
                retracting = asyncio.create_task(self._retract(upload))
                self._retractions.add(retracting)
                retracting.add_done_callback(self._retractions.discard)
                retracting.add_done_callback(_settle)
            raise
        return file_message(stored, self.res.settings)

    async def _retract(self, upload: files.Upload) -> None:
        try:
            await upload.retract()
        except Exception as exc:
            log.warning("cancelled upload not retracted", file_id=upload.file_id, error=str(exc))

    async def _receive_upload(
        self, caller: Caller, chunks: AsyncIterable[Any], gone: asyncio.Event
    ) -> tuple[files.Upload, files.StoredFile]:
        """One init, then data: streamed to S3; committed only if the client is still there."""
        upload: files.Upload | None = None
        expires_after: int | None = None
        clock = BodyClock(self.res.settings)
        messages = aiter(chunks)
        try:
            while True:
                try:
                    chunk = await clock.read(anext(messages))
                except StopAsyncIteration:
                    break
                kind = chunk.WhichOneof("chunk")
                if kind == "init":
                    if upload is not None:
                        raise InvalidArgument("an upload takes exactly one init message")
                    init = chunk.init
                    if init.HasField("expires_after"):
                        # Fail before any bytes are streamed for nothing.
                        expires_after = rules.check_expires_after(
                            self.res.settings.limits, init.expires_after
                        )
                    upload = files.Upload(self.res, caller, init.name)
                elif kind == "data":
                    if upload is None:
                        raise InvalidArgument("the first message of an upload must be init")
                    await upload.write(chunk.data)
                else:
                    raise InvalidArgument("an upload message must carry init or data")
            if upload is None:
                raise InvalidArgument("an upload must start with an init message")
            await upload.finish_bytes()
            if gone.is_set():  # the stream only looked complete: the client cancelled it
                raise _ClientGone
            stored = await upload.commit(expires_after=expires_after)
            if gone.is_set():  # cancelled while we committed
                await upload.retract()
                raise _ClientGone
            return upload, stored
        finally:
            if upload is not None:
                await upload.abort()  # a no-op once committed

    @unary
    async def ListFiles(self, request: Any, context: Any) -> Any:
        caller = await self._caller(context)
        page = await files.list_files(self.res, caller.team, list_query(request))
        out = files_pb2.ListFilesResponse(
            data=[file_message(f, self.res.settings) for f in page.files]
        )
        if page.next_token is not None:  # as REST: with every non-empty page
            out.pagination_token = page.next_token
        return out

    @unary
    async def RetrieveFile(self, request: Any, context: Any) -> Any:
        caller = await self._caller(context)
        stored = await files.get_file(self.res, caller.team, request.file_id)
        return file_message(stored, self.res.settings)

    @unary
    async def DeleteFile(self, request: Any, context: Any) -> Any:
        caller = await self._caller(context)
        await files.delete_file(self.res, caller, request.file_id)
        return files_pb2.DeleteFileResponse(id=request.file_id, deleted=True)

    @server_stream
    async def RetrieveFileContent(self, request: Any, context: Any) -> AsyncIterator[Any]:
        caller = await self._caller(context)
        fmt = download_format(request)
        stored = await files.content_file(self.res, caller.team, request.file_id, fmt)
        async with self.res.storage.open(stored.object_key) as src:
            if src.status != 200:
                raise Unavailable(f"storage answered {src.status}")
            buf = bytearray()
            async for data in src.content.iter_chunked(_S3_READ):
                buf += data
                if len(buf) >= CONTENT_CHUNK:
                    yield files_pb2.FileContentChunk(data=bytes(buf[:CONTENT_CHUNK]))
                    del buf[:CONTENT_CHUNK]
            if buf:
                yield files_pb2.FileContentChunk(data=bytes(buf))

    @unary
    async def CreatePublicUrl(self, request: Any, context: Any) -> Any:
        caller = await self._caller(context)
        expires_after = request.expires_after if request.HasField("expires_after") else None
        created = await public_urls.create(self.res, caller, request.file_id, expires_after)
        out = files_pb2.CreatePublicUrlResponse(public_url=created.url)
        if created.expires_at is not None:
            set_time(out.expires_at, created.expires_at)
        return out

    @unary
    async def RevokePublicUrl(self, request: Any, context: Any) -> Any:
        caller = await self._caller(context)
        revocation = await public_urls.revoke(self.res, caller, request.file_id)
        out = files_pb2.RevokePublicUrlResponse(
            file_id=revocation.file_id, revoked=revocation.revoked
        )
        if revocation.revoked and revocation.url:
            out.public_url = revocation.url
        return out


async def start(
    res: Resources, settings: Settings, requests: RequestCounter | None = None
) -> grpc.aio.Server:
    """Serve `xai_api.Files` on GRPC_PORT, in the caller's event loop."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", settings.grpc_max_message_bytes),
            ("grpc.max_send_message_length", settings.grpc_max_message_bytes),
        ],
        # Past this many RPCs in progress, grpc refuses new ones with RESOURCE_EXHAUSTED
        # before any handler runs (each may hold a message of up to the limit above).
        maximum_concurrent_rpcs=settings.grpc_max_concurrent_rpcs,
    )
    files_pb2_grpc.add_FilesServicer_to_server(FilesService(res, requests), server)
    address = f"{settings.api_host}:{settings.grpc_port}"
    if server.add_insecure_port(address) == 0:
        raise RuntimeError(f"cannot listen for gRPC on {address}")
    await server.start()
    return server
