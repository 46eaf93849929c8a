"""What the load did and what it was told, with times: the checks judge the system against
this record, not against today's error codes.

Times are Unix seconds from `time.time()` (deadlines are wall-clock times, and the edge
compares them with the same host clock). An acknowledgement is a response the contract
makes definite: a 2xx, or a 4xx (the request changed nothing). A 5xx, a timeout or a cut
connection leaves the outcome unknown: the checks then assume nothing either way.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from dataclasses import dataclass, field


def now() -> float:
    return time.time()


@dataclass
class Request:
    op: str  # "upload", "grpc-upload", "create", "update", "revoke", "delete", "edge-get", ...
    started: float
    ended: float
    outcome: str  # "200", "404", "503", "grpc:UNAVAILABLE", "TimeoutError", ...

    @property
    def ok(self) -> bool:
        return self.outcome[:1] in "23" or self.outcome == "grpc:OK"

    @property
    def failed(self) -> bool:
        """An error of the system (not a refusal the contract makes definite)."""
        return not definite(self.outcome)


# gRPC codes that, like a 4xx, say the request was refused and changed nothing.
_GRPC_REFUSALS = {
    "OK",
    "INVALID_ARGUMENT",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "PERMISSION_DENIED",
    "UNAUTHENTICATED",
    "OUT_OF_RANGE",
}


def definite(outcome: str) -> bool:
    """Whether an outcome tells what happened: a 2xx, 3xx or 4xx, or a gRPC refusal (a 429
    or RESOURCE_EXHAUSTED from a concurrency limit also changed nothing)."""
    if outcome.startswith("grpc:"):
        return outcome[5:] in _GRPC_REFUSALS
    return outcome[:1] in "234"


@dataclass
class Deadline:
    """A request that set (or may have set) a URL's deadline: `expires_at` when it was
    acknowledged, else the latest deadline it could have set (sent + expires_after + 1)."""

    sent: float
    token: str | None  # None: unacknowledged, so any of the file's tokens
    bound: float | None  # None: no deadline


@dataclass
class Token:
    """A public URL the API returned."""

    token: str
    file_id: str
    url: str
    created_ack: float
    dead_ack: float | None = None  # when a revoke, a delete or a read-back said it is dead

    def kill(self, at: float) -> None:
        if self.dead_ack is None or at < self.dead_ack:
            self.dead_ack = at


@dataclass
class File:
    """An upload the API acknowledged, with the sha256 of the bytes sent."""

    id: str
    team: str
    sha256: str
    size: int
    acked: float
    via: str  # "rest" or "grpc"
    deleted_ack: float | None = None  # a delete acknowledged (or a read-back said gone)
    delete_unknown: bool = False  # a delete was sent whose outcome is unknown
    live_token: str | None = None  # the URL the load believes live
    url_unknown: bool = False  # a URL request's outcome is unknown: read back before use
    tokens: list[str] = field(default_factory=list)


@dataclass
class EdgeRead:
    token: str
    started: float
    status: int | None  # None: no answer (exception)
    body_sha256: str | None = None
    ranged: tuple[int, int] | None = None  # the range asked for (first, last), if any
    ended: float = 0.0


@dataclass
class History:
    requests: list[Request] = field(default_factory=list)
    files: dict[str, File] = field(default_factory=dict)
    tokens: dict[str, Token] = field(default_factory=dict)
    deadlines: dict[str, list[Deadline]] = field(default_factory=dict)  # per file id
    reads: list[EdgeRead] = field(default_factory=list)
    sent_bytes: dict[str, bytes] = field(default_factory=dict)  # file id -> bytes (ranges)
    # Per file: when each request that may have killed or changed its URL was sent (revoke,
    # delete, create, update), and when any of its requests had an unknown outcome.
    touched: dict[str, list[float]] = field(default_factory=dict)
    unknown: dict[str, list[float]] = field(default_factory=dict)
    # Periods when live URLs may answer 404 by design (the token cache lost, until
    # reconcile has rebuilt it).
    blackouts: list[tuple[float, float]] = field(default_factory=list)

    def record(self, op: str, started: float, outcome: str) -> Request:
        req = Request(op, started, now(), outcome)
        self.requests.append(req)
        return req

    def token_seen(self, file: File, token: str, url: str, at: float) -> Token:
        t = self.tokens.get(token)
        if t is None:
            t = self.tokens[token] = Token(token, file.id, url, at)
            file.tokens.append(token)
        return t

    def file_gone(self, file: File, at: float) -> None:
        """The file is deleted (acknowledged, or read back as gone) at `at`."""
        if file.deleted_ack is None or at < file.deleted_ack:
            file.deleted_ack = at
        for tok in file.tokens:
            self.tokens[tok].kill(at)
        file.live_token = None

    def outcomes(self) -> Counter[str]:
        return Counter(r.outcome for r in self.requests)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def token_of(url: str) -> str:
    """`<base>/<token>/<name>` -> token."""
    return url.rsplit("/", 2)[-2]
