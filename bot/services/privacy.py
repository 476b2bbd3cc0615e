"""Export and forget: people can have their data back, and have it gone.

``forget`` deletes every answer, tag, event and conversation of a person in one transaction.
If they had opted out, a hash of their key stays on the suppression list so the opt-out
outlives the deletion.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError
from sqlmodel import SQLModel

from bot.errors import RespondentNotFound
from bot.store import repo
from bot.store import statements as sql
from bot.store.database import Database
from bot.store.models import Answer, utcnow

EXPORT_COLUMNS = (
    "respondent",
    "flow",
    "flow_version",
    "conversation",
    "step",
    "step_type",
    "value",
    "answered_at",
)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return _utc_iso(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _utc_iso(moment: datetime) -> str:
    """ISO 8601 with its zone: times are stored in UTC, and SQLite hands them back naive."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return aware.isoformat()


def answer_record(answer: Answer, key: str | None, version: str) -> dict[str, Any]:
    return {
        "respondent": key,
        "flow": answer.flow_id,
        "flow_version": version,
        "conversation": answer.conversation_id or answer.response_id,
        "step": answer.step_id,
        "step_type": answer.step_type,
        "value": answer.value,
        "answered_at": _utc_iso(answer.created_at),
    }


async def export_answers(db: Database, *, flow_id: str | None) -> AsyncIterator[dict[str, Any]]:
    async with db.reads() as session:
        async for answer, key, version in repo.flow_answers(session, flow_id=flow_id):
            yield answer_record(answer, key, version)


async def count_answers(db: Database, *, flow_id: str | None) -> int:
    async with db.reads() as session:
        return await repo.count_answers(session, flow_id=flow_id)


# A spreadsheet runs a cell starting with one of these as a formula (CSV injection).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(value: Any) -> Any:
    """A CSV cell a spreadsheet shows as text: a leading ' defuses formula characters."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return "" if value is None else value


def format_record(record: dict[str, Any], fmt: str) -> str:
    """One line of CSV or JSON Lines (CSV values that are lists/bools are JSON-encoded).

    CSV string cells that start with ``= + - @`` or a tab/CR get a leading ``'`` so opening
    the export in a spreadsheet never runs a respondent's answer as a formula; JSON Lines
    keeps every value exactly as stored.
    """
    if fmt == "jsonl":
        return json.dumps(record, ensure_ascii=False, default=_json_default) + "\n"
    cells = [_csv_cell(record[c]) for c in EXPORT_COLUMNS]
    if not isinstance(record["value"], str):
        # JSON, not defused: no formula here, and a negative rating stays a number (-2).
        cells[EXPORT_COLUMNS.index("value")] = json.dumps(record["value"], ensure_ascii=False)
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerow(cells)
    return buf.getvalue()


def csv_header() -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerow(EXPORT_COLUMNS)
    return buf.getvalue()


def _row(model: SQLModel) -> dict[str, Any]:
    return json.loads(json.dumps(model.model_dump(), default=_json_default))


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
            data["channels"] = json.loads(json.dumps(channel_rows, default=_json_default))
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
        if respondent is None:
            raise RespondentNotFound(f"no respondent with id {key!r}")
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
