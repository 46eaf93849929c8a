"""The ceiling under the edge: aiohttp's low-level server on uvloop doing nothing but answer.

It answers every GET with a body from memory and the edge's response headers (rendered once),
and a `Range: bytes=a-b` inside the body with that 206, the way the edge answers a hot object,
but with no token lookup, no record check, no counting and no cache. Whatever it costs per
request, the edge cannot cost less while it keeps aiohttp; `bench/edge_cpu.py --pid` measures
both in the same rounds (README, "The ceiling is aiohttp").

Usage: python bench/bare_aiohttp.py PORT FILE [--workers 1]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import re
import socket
from pathlib import Path

import uvloop
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

_RANGE = re.compile(r"bytes=(\d+)-(\d+)")
_HEADERS = {
    "Content-Type": "application/octet-stream",
    "ETag": '"bench"',
    "Last-Modified": "Wed, 25 Nov 2026 00:00:00 GMT",
    "Cache-Control": "public, max-age=60",
    "Accept-Ranges": "bytes",
    "Content-Disposition": 'inline; filename="bench"',
    "Server": "filecdn-edge",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Resource-Policy": "cross-origin",
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "Accept-Ranges, Content-Disposition, Content-Length",
}


def serve(sock: socket.socket, body: bytes) -> None:
    full = CIMultiDictProxy(CIMultiDict({**_HEADERS, "Content-Length": str(len(body))}))
    view = memoryview(body)

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        wanted = request.headers.get("Range")
        m = _RANGE.fullmatch(wanted) if wanted else None
        if m is None:
            return web.Response(body=body, headers=full)
        first, last = int(m.group(1)), min(int(m.group(2)), len(body) - 1)
        headers = CIMultiDict(_HEADERS)
        headers["Content-Length"] = str(last - first + 1)
        headers["Content-Range"] = f"bytes {first}-{last}/{len(body)}"
        resp = web.StreamResponse(status=206, headers=headers)
        await resp.prepare(request)
        await resp.write(view[first : last + 1])
        await resp.write_eof()
        return resp

    async def main() -> None:
        server = web.Server(handle, access_log=None)
        loop = asyncio.get_running_loop()
        await loop.create_server(server, sock=sock, backlog=4096)
        await asyncio.Event().wait()

    uvloop.run(main())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("port", type=int)
    ap.add_argument("file", type=Path)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    body = args.file.read_bytes()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(4096)
    procs = [multiprocessing.Process(target=serve, args=(sock, body)) for _ in range(args.workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()


if __name__ == "__main__":
    main()
