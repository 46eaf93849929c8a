"""The ceiling under the edge: aiohttp's low-level server on uvloop doing nothing but answer.

It answers every GET with a body from memory and the edge's response headers (rendered once),
and a `Range: bytes=a-b` inside the body with that 206, the way the edge answers a hot object
(one `web.Response`: head and body in one write), but with no token lookup, no record check,
no counting and no cache. Whatever it costs per request, the edge cannot cost less while it
keeps aiohttp. `bench/edge.sh` runs it as a peer (`aiohttp_bare`, in the same run as nginx
and the edge); `bench/edge_cpu.py --pid` measures its CPU per request beside the edge's.

With several files, the last segment of the request's path picks one by its file name
(`/<anything>/small.png`), so one server is a whole peers.sh target; with one, every path
gets it.

With `--redis URL` it also looks the path's first segment up as a token, through the edge's
own `TokenLookups` (batched `MGET`s on redis-py, as the edge does), and answers 404 for an
unknown one: aiohttp plus the one Redis round trip per request that the design requires
(fail closed, revocation at 0 ms), and nothing else (no record check, no counting). That
is the floor of any edge that keeps aiohttp and redis-py; `bench/edge.sh` runs it as the
peer `aiohttp_lookup`.

Usage: python bench/bare_aiohttp.py PORT FILE [FILE...] [--workers 1] [--redis URL]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import re
import socket
from pathlib import Path

import redis.asyncio as aioredis
import uvloop
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from cdn_edge.lookups import TokenLookups

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


def serve(sock: socket.socket, bodies: dict[str, bytes], redis_url: str | None) -> None:
    full = {
        name: (body, CIMultiDictProxy(CIMultiDict({**_HEADERS, "Content-Length": str(len(body))})))
        for name, body in bodies.items()
    }
    only = next(iter(full.values())) if len(full) == 1 else None
    lookups: TokenLookups | None = None

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        path = request.path
        found = only or full.get(path.rpartition("/")[2])
        if found is None:
            return web.Response(status=404)
        if lookups is not None and await lookups.get(path.split("/", 2)[1]) is None:
            return web.Response(status=404)
        body, headers = found
        wanted = request.headers.get("Range")
        m = _RANGE.fullmatch(wanted) if wanted else None
        if m is None:
            return web.Response(body=body, headers=headers)
        first, last = int(m.group(1)), min(int(m.group(2)), len(body) - 1)
        partial = CIMultiDict(_HEADERS)
        partial["Content-Length"] = str(last - first + 1)
        partial["Content-Range"] = f"bytes {first}-{last}/{len(body)}"
        return web.Response(status=206, body=body[first : last + 1], headers=partial)

    async def main() -> None:
        nonlocal lookups
        if redis_url is not None:
            lookups = TokenLookups(aioredis.Redis.from_url(redis_url), timeout=2.0)
        server = web.Server(handle, access_log=None)
        loop = asyncio.get_running_loop()
        await loop.create_server(server, sock=sock, backlog=4096)
        await asyncio.Event().wait()

    uvloop.run(main())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("port", type=int)
    ap.add_argument("files", type=Path, nargs="+")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--redis", metavar="URL", help="look each path's token up there (404 if none)")
    args = ap.parse_args()
    bodies = {f.name: f.read_bytes() for f in args.files}
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(4096)
    procs = [
        multiprocessing.Process(target=serve, args=(sock, bodies, args.redis))
        for _ in range(args.workers)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join()


if __name__ == "__main__":
    main()
