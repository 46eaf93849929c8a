"""When Redis is unreachable the API fails closed: 503, nothing changes; then it recovers."""

from __future__ import annotations

import aiohttp

from cli.embedded import free_port, start_valkey, tcp_open, wait_until
from cli.stack import filecdn_argv
from shared.resources import Resources
from tests.conftest import Stack, TeamKey
from tests.helpers import call, create, png, revoke, upload, wait_for


async def test_api_fails_closed_while_redis_is_down_and_recovers(
    stack: Stack, res: Resources, team: TeamKey
) -> None:
    redis_port, api_port, ops_port = free_port(), free_port(), free_port()
    redis_dir = stack.data_dir / "outage-valkey"
    redis_url = start_valkey(
        stack.sup, redis_dir, persist=False, port=redis_port, name="outage-valkey"
    )
    env = {
        **stack.env,
        "REDIS_URL": redis_url,
        "API_PORT": str(api_port),
        "GRPC_PORT": str(free_port()),
        "OPS_PORT": str(ops_port),
        "REDIS_TIMEOUT": "1",
    }
    stack.sup.start("outage-api", filecdn_argv("api"), env=env)
    try:
        wait_until(lambda: tcp_open("127.0.0.1", api_port), 60, "outage API")
        async with aiohttp.ClientSession(
            base_url=f"http://127.0.0.1:{api_port}", headers={"Authorization": f"Bearer {team.key}"}
        ) as api:
            shared_file = await upload(api, png())
            _, made = await create(api, shared_file["id"], {})
            private = await upload(api, png())
            rows_before = await res.db.fetchval("SELECT count(*) FROM public_urls")

            stack.sup.stop("outage-valkey")
            status, body = await create(api, private["id"], {})
            assert status == 503 and body["code"] == "The service is currently unavailable"
            assert (await revoke(api, shared_file["id"]))[0] == 503
            # A file with a live URL cannot be deleted: its cache entry cannot be removed.
            assert (await call(api, "DELETE", f"/v1/files/{shared_file['id']}"))[0] == 503
            assert await res.db.fetchval("SELECT count(*) FROM public_urls") == rows_before
            assert (
                await res.db.fetchval(
                    "SELECT revoked_at FROM public_urls WHERE token = $1",
                    made["public_url"].split("/")[-2],
                )
                is None
            )
            assert (await call(api, "GET", f"/v1/files/{shared_file['id']}"))[0] == 200
            # A private one can: no URL to kill, and the sweep removes its object later.
            assert (await call(api, "DELETE", f"/v1/files/{private['id']}"))[0] == 200
            private = await upload(api, png())
            ready_url = f"http://127.0.0.1:{ops_port}/readyz"
            status, ready = await call(api, "GET", ready_url)
            assert status == 503 and ready["checks"]["redis"].startswith("error")

            start_valkey(stack.sup, redis_dir, persist=False, port=redis_port, name="outage-valkey")

            async def recovered() -> bool:
                return (await create(api, private["id"], {}))[0] == 200

            await wait_for(recovered, timeout=20, what="the API recovering with Redis")

            # Readiness is cached for a moment: poll until it sees Redis again.
            async def ready() -> bool:
                return (await call(api, "GET", ready_url))[0] == 200

            await wait_for(ready, timeout=10, what="readiness with Redis back")
    finally:
        stack.sup.stop("outage-api")
        stack.sup.stop("outage-valkey")
