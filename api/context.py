"""Typed application and request state shared by the REST handlers."""

from __future__ import annotations

from aiohttp import web

from api.request_metrics import RequestCounter
from shared.actors import Caller
from shared.resources import Resources

RESOURCES = web.AppKey("resources", Resources)
REQUEST_COUNTER = web.AppKey("request_counter", RequestCounter)
_CALLER = web.RequestKey("caller", Caller)


def resources(request: web.Request) -> Resources:
    return request.app[RESOURCES]


def caller(request: web.Request) -> Caller:
    """The authenticated team and API key (set by the authentication middleware)."""
    return request[_CALLER]


def set_caller(request: web.Request, value: Caller) -> None:
    request[_CALLER] = value
