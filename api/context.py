"""Typed application and request state shared by the REST handlers."""

from __future__ import annotations

from aiohttp import web

from shared.resources import Resources
from shared.teams import Team

RESOURCES = web.AppKey("resources", Resources)
_TEAM = web.RequestKey("team", Team)


def resources(request: web.Request) -> Resources:
    return request.app[RESOURCES]


def team(request: web.Request) -> Team:
    return request[_TEAM]


def set_team(request: web.Request, value: Team) -> None:
    request[_TEAM] = value
