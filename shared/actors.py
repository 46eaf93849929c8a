"""Who acts: a team's API key, or the worker. Plain values, no I/O.

Every change to a file or a URL runs on behalf of an actor, so that the change can say who
made it (the audit trail records the key's id and its name, or its prefix, or `worker`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class Team:
    id: int
    name: str


@dataclass(frozen=True, slots=True)
class Actor:
    """An API key (its id, the prefix `list-keys` shows, its optional name) or the worker."""

    kind: Literal["api_key", "worker"]
    key_id: int | None = None
    key_prefix: str | None = None
    key_name: str | None = None

    @classmethod
    def api_key(cls, key_id: int, key_prefix: str, key_name: str | None = None) -> Actor:
        return cls("api_key", key_id, key_prefix, key_name)

    @property
    def name(self) -> str:
        """How the audit trail names the actor: the key's name, else its prefix, or `worker`."""
        if self.kind == "worker":
            return "worker"
        return self.key_name or self.key_prefix or ""

    @property
    def label(self) -> str:
        """How logs name the actor: `worker`, or `key <prefix>…` (never the whole key)."""
        return "worker" if self.kind == "worker" else f"key {self.key_prefix}…"


WORKER = Actor("worker")


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated request: the team it acts for, and the key that made it."""

    team: Team
    actor: Actor
