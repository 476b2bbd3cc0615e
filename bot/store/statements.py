"""Core statements for the conversation hot path, run inside :meth:`Database.run`.

These are plain synchronous SQLAlchemy Core calls on one Connection: ``Database.run`` runs a
whole transaction body in one go — on SQLite in a single writer thread (one thread hop per
answer instead of one per statement), on PostgreSQL through ``AsyncConnection.run_sync``.
Keyword-only, no commits: the body's caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import IntegrityError

from bot.store.models import Answer, Conversation, Event, FlowVersion, Respondent, Suppression, Tag
from bot.store.repo import key_hash

C = Conversation.__table__
R = Respondent.__table__
A = Answer.__table__
T = Tag.__table__
E = Event.__table__
V = FlowVersion.__table__
S = Suppression.__table__


@dataclass(frozen=True)
class RespondentRow:
    id: int
    key: str
    attributes: dict[str, Any]
    opted_out: bool
    timezone: str | None = None


@dataclass(frozen=True)
class ConversationRow:
    id: str
    respondent_id: int
    flow_id: str
    flow_version_id: int
    status: str
    state: str
    version: int
    open_key: str | None
    started_at: datetime


_CONVERSATION_COLUMNS = (
    C.c.id,
    C.c.respondent_id,
    C.c.flow_id,
    C.c.flow_version_id,
    C.c.status,
    C.c.state,
    C.c.version,
    C.c.open_key,
    C.c.started_at,
)
_RESPONDENT_COLUMNS = (R.c.id, R.c.key, R.c.attributes, R.c.opted_out, R.c.timezone)


def load_conversation(conn: Connection, *, id: str) -> tuple[ConversationRow, RespondentRow] | None:
    """The conversation and its respondent in one statement."""
    row = conn.execute(
        select(*_CONVERSATION_COLUMNS, *_RESPONDENT_COLUMNS)
        .join_from(C, R, R.c.id == C.c.respondent_id)
        .where(C.c.id == id)
    ).one_or_none()
    if row is None:
        return None
    n = len(_CONVERSATION_COLUMNS)
    return ConversationRow(*row[:n]), RespondentRow(*row[n:])


def find_respondent(conn: Connection, *, key: str) -> RespondentRow | None:
    row = conn.execute(select(*_RESPONDENT_COLUMNS).where(R.c.key == key)).one_or_none()
    return RespondentRow(*row) if row is not None else None


def is_suppressed(conn: Connection, *, key: str) -> bool:
    return (
        conn.execute(select(S.c.key_hash).where(S.c.key_hash == key_hash(key))).first() is not None
    )


def add_respondent(
    conn: Connection, *, key: str, attributes: dict[str, Any], timezone: str | None, now: datetime
) -> RespondentRow:
    """Insert a respondent; a key on the suppression list starts opted out."""
    opted_out = is_suppressed(conn, key=key)
    new_id = conn.execute(
        insert(R)
        .values(
            key=key,
            attributes=attributes,
            timezone=timezone,
            opted_out=opted_out,
            opted_out_at=now if opted_out else None,
            created_at=now,
        )
        .returning(R.c.id)
    ).scalar_one()
    return RespondentRow(new_id, key, attributes, opted_out, timezone)


def update_respondent(conn: Connection, *, id: int, **values: Any) -> None:
    conn.execute(update(R).where(R.c.id == id).values(**values))


def suppress(conn: Connection, *, key: str, now: datetime) -> None:
    if not is_suppressed(conn, key=key):
        conn.execute(insert(S).values(key_hash=key_hash(key), created_at=now))


def open_conversation(conn: Connection, *, open_key: str) -> ConversationRow | None:
    row = conn.execute(select(*_CONVERSATION_COLUMNS).where(C.c.open_key == open_key)).one_or_none()
    return ConversationRow(*row) if row is not None else None


def conversations_of(conn: Connection, *, respondent_id: int) -> list[ConversationRow]:
    rows = conn.execute(
        select(*_CONVERSATION_COLUMNS)
        .where(C.c.respondent_id == respondent_id)
        .order_by(C.c.started_at)
    )
    return [ConversationRow(*row) for row in rows]


def open_conversation_rows(
    conn: Connection, *, started_before: datetime, limit: int
) -> list[ConversationRow]:
    """Open conversations old enough to have expired, oldest first, a batch at a time."""
    query = (
        select(*_CONVERSATION_COLUMNS)
        .where(C.c.open_key.is_not(None), C.c.started_at < started_before)
        .order_by(C.c.started_at)
        .limit(limit)
    )
    return [ConversationRow(*row) for row in conn.execute(query)]


def insert_conversation(conn: Connection, **values: Any) -> None:
    conn.execute(insert(C).values(**values))


def save_state(conn: Connection, *, id: str, expected_version: int, values: dict[str, Any]) -> bool:
    """Compare-and-set: False when another request saved this conversation first."""
    result = conn.execute(
        update(C)
        .where(C.c.id == id, C.c.version == expected_version)
        .values(version=expected_version + 1, **values)
    )
    return result.rowcount == 1


def close_open_conversations(
    conn: Connection, *, respondent_id: int, status: str, now: datetime
) -> None:
    conn.execute(
        update(C)
        .where(C.c.respondent_id == respondent_id, C.c.open_key.is_not(None))
        .values(
            status=status, open_key=None, current_step=None, updated_at=now, version=C.c.version + 1
        )
    )


def insert_answer(conn: Connection, **values: Any) -> None:
    conn.execute(insert(A).values(**values))


def insert_tags(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        conn.execute(insert(T), list(rows))


def add_event(
    conn: Connection, *, kind: str, respondent_id: int | None, data: dict[str, Any], now: datetime
) -> None:
    conn.execute(
        insert(E).values(kind=kind, respondent_id=respondent_id, data=data, created_at=now)
    )


def flow_version_id(
    conn: Connection,
    *,
    flow_id: str,
    hash: str,
    title: str,
    definition: dict[str, Any],
    now: datetime,
) -> int:
    """The row id of a flow version, storing it on first use (safe against a parallel insert)."""
    query = select(V.c.id).where(V.c.flow_id == flow_id, V.c.hash == hash)
    found = conn.execute(query).scalar_one_or_none()
    if found is not None:
        return int(found)
    try:
        with conn.begin_nested():
            return int(
                conn.execute(
                    insert(V)
                    .values(
                        flow_id=flow_id,
                        hash=hash,
                        title=title,
                        definition=definition,
                        created_at=now,
                    )
                    .returning(V.c.id)
                ).scalar_one()
            )
    except IntegrityError:
        return int(conn.execute(query).scalar_one())


def flow_version(conn: Connection, *, id: int) -> tuple[str, dict[str, Any]] | None:
    row = conn.execute(select(V.c.hash, V.c.definition).where(V.c.id == id)).one_or_none()
    return (row[0], row[1]) if row is not None else None
