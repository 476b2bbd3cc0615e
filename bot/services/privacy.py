"""One person's data: they can have it back (export_respondent), and have it gone (forget).

``forget`` deletes every answer, tag, event and conversation of a person in one transaction.
If they had opted out, a hash of their key stays on the suppression list so the opt-out
outlives the deletion.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError
from sqlmodel import SQLModel

from bot.errors import RespondentNotFound
from bot.services.export import json_default
from bot.store import repo
from bot.store import statements as sql
from bot.store.database import Database
from bot.store.models import utcnow


def _row(model: SQLModel) -> dict[str, Any]:
    return json.loads(json.dumps(model.model_dump(), default=json_default))


async def export_respondent(db: Database, *, key: str) -> dict[str, Any]:
    """Everything Parley stores about one person, as JSON-ready data."""
    async with db.reads() as session:
        respondent = await repo.get_respondent(session, key=key)
        if respondent is None or respondent.id is None:
            raise RespondentNotFound(f"no respondent with id {key!r}")
        rows = await repo.rows_of(session, respondent_id=respondent.id)
        data: dict[str, Any] = {"respondent": _row(respondent)}
        conversations = []
        for conversation in rows["conversations"]:
            item = _row(conversation)
            item["state"] = json.loads(conversation.state)
            item.pop("open_key", None)
            conversations.append(item)
        data["conversations"] = conversations
        data["answers"] = [_row(a) for a in rows["answers"]]
        data["tags"] = [_row(t) for t in rows["tags"]]
        data["events"] = [_row(e) for e in rows["events"]]
        channel_rows = await repo.channel_rows_of(session, respondent_id=respondent.id, key=key)
        if channel_rows:
            data["channels"] = json.loads(json.dumps(channel_rows, default=json_default))
        return data


@dataclass(frozen=True)
class Forgotten:
    key: str
    counts: dict[str, int]
    still_suppressed: bool
    scrubbed: bool = True  # False: an old copy may stay in SQLite's -wal file a while longer


FORGET_TRIES = 3


async def forget(
    db: Database, *, key: str, on_progress: Callable[[str], None] | None = None
) -> Forgotten:
    def body(conn: Connection) -> Forgotten:
        respondent = sql.find_respondent(conn, key=key)
        if respondent is None:  # never surveyed, yet a channel may hold something of theirs
            counts = repo.delete_key_rows(conn, key=key)
            if not counts:
                raise RespondentNotFound(f"no respondent with id {key!r}")
            return Forgotten(key, counts, sql.is_suppressed(conn, key=key))
        counts = repo.delete_respondent(conn, respondent_id=respondent.id, key=key)
        if respondent.opted_out:
            sql.suppress(conn, key=key, now=utcnow())
        return Forgotten(key, counts, respondent.opted_out)

    for attempt in range(1, FORGET_TRIES + 1):
        try:
            deleted = await db.run(body)
            break
        except IntegrityError:
            # a conversation or event of theirs was written while deleting (PostgreSQL, a
            # server still running): nothing was deleted; go again and take that too
            if attempt == FORGET_TRIES:
                raise
    forgotten = dataclasses.replace(deleted, scrubbed=await db.scrub())
    if on_progress:
        on_progress("deleted")
    return forgotten
