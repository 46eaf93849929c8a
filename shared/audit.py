"""The audit trail, read: a team's lifecycle changes, newest first, a page at a time.

Rows are written by the unit of work (`shared/unit_of_work.py`) in the transaction of the
change they describe, so a change and its row exist together or not at all. A team sees
only its own rows; asking for another team's file (or one that never existed) finds no
rows, the same answer either way. A deleted file's history stays readable until retention
(AUDIT_RETENTION_DAYS) removes it.

Pages are keyset on the event id (`after` = the last id seen). Ids come from one sequence,
so "newest first" is the order in which changes were written; a change committed late with
a smaller id than a page already read is not shown to a client that keeps paging (it is to
the next first page).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from shared import ids, pagination
from shared.actors import Team
from shared.db import Pool
from shared.errors import InvalidArgument

_COLUMNS = """id, kind, file_id, created_at, actor_kind, actor_key_id, actor_name, token_prefix,
              old_expires_at, new_expires_at"""
# One query per shape, each a range scan of its index (no `$n IS NULL OR ...` that a
# generic plan cannot use): audit_events_team and audit_events_team_file.
_BY_TEAM = f"""SELECT {_COLUMNS} FROM audit_events
                WHERE team_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3"""
_BY_FILE = f"""SELECT {_COLUMNS} FROM audit_events
                WHERE team_id = $1 AND file_id = $4 AND id < $2 ORDER BY id DESC LIMIT $3"""
_NO_POSITION = 2**63 - 1  # `after` omitted: before every id


@dataclass(frozen=True, slots=True)
class AuditEvent:
    id: int
    kind: str
    file_id: str
    created_at: datetime
    actor_kind: str
    actor_key_id: int | None
    actor_name: str | None
    token_prefix: str | None
    old_expires_at: datetime | None
    new_expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class EventPage:
    events: list[AuditEvent]
    has_more: bool


def check_after(after: int | None) -> int:
    """The keyset position: an event id (a positive integer), or none for the first page."""
    if after is None:
        return _NO_POSITION
    if not 1 <= after <= _NO_POSITION:
        raise InvalidArgument("after must be the id of an audit event (a positive integer)")
    return after


async def list_events(
    db: Pool,
    team: Team,
    *,
    file_id: str | None = None,
    after: int | None = None,
    limit: int = pagination.DEFAULT_PAGE_SIZE,
    limit_max: int = pagination.DEFAULT_PAGE_SIZE,
) -> EventPage:
    """One page of the team's events (of one file, if given), newest first."""
    if file_id is not None:
        ids.check_file_id(file_id)
    position = check_after(after)
    size = pagination.clamp_limit(limit, limit_max)
    args: list[object] = [team.id, position, size + 1]
    if file_id is None:
        rows = await db.fetch(_BY_TEAM, *args)
    else:
        rows = await db.fetch(_BY_FILE, *args, file_id)
    events = [AuditEvent(**dict(r)) for r in rows]
    return EventPage(events[:size], has_more=len(events) > size)
