"""The edge process."""

from __future__ import annotations

from aiohttp import web

from cdn_edge.app import build_app
from shared.settings import Settings


def run_edge(settings: Settings, workers: int) -> None:
    web.run_app(
        build_app(settings),
        host=settings.edge_host,
        port=settings.edge_port,
        access_log=None,
        print=None,
    )
