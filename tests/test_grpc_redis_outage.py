"""With Redis down, gRPC fails closed like REST's 503: UNAVAILABLE (which the SDK retries)."""

from __future__ import annotations

import grpc
import pytest
from xai_sdk.proto import files_pb2, files_pb2_grpc

from cli.embedded import free_port, start_valkey, tcp_open, wait_until
from cli.stack import filecdn_argv
from shared.resources import Resources
from tests.conftest import Stack, TeamKey
from tests.helpers import auth, data, init, stream


async def test_public_url_changes_are_unavailable_while_redis_is_down(
    stack: Stack, res: Resources, team: TeamKey
) -> None:
    redis_port, grpc_port = free_port(), free_port()
    redis_url = start_valkey(
        stack.sup,
        stack.data_dir / "grpc-outage-valkey",
        persist=False,
        port=redis_port,
        name="grpc-outage-valkey",
    )
    env = {
        **stack.env,
        "REDIS_URL": redis_url,
        "API_PORT": str(free_port()),
        "OPS_PORT": str(free_port()),
        "GRPC_PORT": str(grpc_port),
        "REDIS_TIMEOUT": "1",
    }
    stack.sup.start("grpc-outage-api", filecdn_argv("api"), env=env)
    try:
        wait_until(lambda: tcp_open("127.0.0.1", grpc_port), 60, "outage API (gRPC)")
        async with grpc.aio.insecure_channel(f"localhost:{grpc_port}") as channel:
            stub = files_pb2_grpc.FilesStub(channel)
            f = await stub.UploadFile(
                stream([init(), data(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)]), metadata=auth(team)
            )
            stack.sup.stop("grpc-outage-valkey")
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.CreatePublicUrl(
                    files_pb2.CreatePublicUrlRequest(file_id=f.id), metadata=auth(team)
                )
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert err.value.details() == "a dependency is unavailable; retry later"  # as REST
            assert (
                await res.db.fetchval("SELECT count(*) FROM public_urls WHERE file_id = $1", f.id)
                == 0
            )
            # Reading needs only PostgreSQL and S3: it keeps working.
            got = await stub.RetrieveFile(
                files_pb2.RetrieveFileRequest(file_id=f.id), metadata=auth(team)
            )
            assert got.id == f.id and not got.HasField("public_url")
    finally:
        stack.sup.stop("grpc-outage-api")
        stack.sup.stop("grpc-outage-valkey")
