"""Core statements for the conversation hot path, run inside :meth:`Database.run`.

These are plain synchronous SQLAlchemy Core calls on one Connection: ``Database.run`` runs a
whole transaction body in one go — on SQLite in a single writer thread (one thread hop per
answer instead of one per statement), on PostgreSQL through ``AsyncConnection.run_sync``.
Keyword-only, no commits: the body's caller owns the transaction.

Every statement is built once, at import, with bound parameters: building a Core statement
per call cost four times as much as executing it (``values()``, coercions, cache keys). Hot
ones are ``Prepared``: on SQLite they run straight on the driver (see prepared.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from bot.store.models import Answer, Conversation, Event, FlowVersion, Respondent, Suppression, Tag
from bot.store.prepared import Prepared, insert_or_skip
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
    last_surveyed_at: datetime | None = None  # when a conversation last started


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
_RESPONDENT_COLUMNS = (
    R.c.id,
    R.c.key,
    R.c.attributes,
    R.c.opted_out,
    R.c.timezone,
    R.c.last_surveyed_at,
)


_LOAD_CONVERSATION = Prepared(
    select(*_CONVERSATION_COLUMNS, *_RESPONDENT_COLUMNS)
    .join_from(C, R, R.c.id == C.c.respondent_id)
    .where(C.c.id == bindparam("id"))
)
_FIND_RESPONDENT = Prepared(select(*_RESPONDENT_COLUMNS).where(R.c.key == bindparam("key")))
_IS_SUPPRESSED = Prepared(select(S.c.key_hash).where(S.c.key_hash == bindparam("hash")))
_ADD_RESPONDENT = Prepared(insert(R).returning(R.c.id), on_sqlite=insert(R))
_UPDATE_RESPONDENT = Prepared(update(R).where(R.c.id == bindparam("_id")))
_ADD_SUPPRESSION = insert_or_skip(S)
_MARK_OPTED_OUT = Prepared(
    update(R)
    .where(R.c.id == bindparam("_id"), R.c.opted_out.is_(False))
    .values(opted_out=True, opted_out_at=bindparam("_now"))
)
_MARK_SURVEYED = Prepared(
    update(R)
    .where(
        R.c.id == bindparam("_id"),
        or_(R.c.last_surveyed_at.is_(None), R.c.last_surveyed_at <= bindparam("_not_since")),
    )
    .values(last_surveyed_at=bindparam("_now"))
)
_IS_OPTED_OUT = Prepared(select(R.c.opted_out).where(R.c.id == bindparam("id")))
_OPEN_CONVERSATION = Prepared(
    select(*_CONVERSATION_COLUMNS).where(C.c.open_key == bindparam("open_key"))
)
_CONVERSATIONS_OF = Prepared(
    select(*_CONVERSATION_COLUMNS)
    .where(C.c.respondent_id == bindparam("respondent_id"))
    .order_by(C.c.started_at)
)
_INSERT_CONVERSATION = Prepared(insert(C))
_SAVE_STATE = Prepared(
    update(C).where(C.c.id == bindparam("_id"), C.c.version == bindparam("_version"))
)
_INSERT_ANSWER = Prepared(insert(A))
_INSERT_TAG = Prepared(insert(T))
_ADD_EVENT = Prepared(insert(E))
_FIND_FLOW_VERSION = Prepared(
    select(V.c.id).where(V.c.flow_id == bindparam("flow_id"), V.c.hash == bindparam("hash"))
)
_ADD_FLOW_VERSION = Prepared(insert(V).returning(V.c.id), on_sqlite=insert(V))
_FLOW_VERSION = Prepared(select(V.c.hash, V.c.definition).where(V.c.id == bindparam("id")))


def load_conversation(conn: Connection, *, id: str) -> tuple[ConversationRow, RespondentRow] | None:
    """The conversation and its respondent in one statement."""
    row = _LOAD_CONVERSATION(conn, {"id": id}).one_or_none()
    if row is None:
        return None
    n = len(_CONVERSATION_COLUMNS)
    return ConversationRow(*row[:n]), RespondentRow(*row[n:])


def find_respondent(conn: Connection, *, key: str) -> RespondentRow | None:
    row = _FIND_RESPONDENT(conn, {"key": key}).one_or_none()
    return RespondentRow(*row) if row is not None else None


def is_suppressed(conn: Connection, *, key: str) -> bool:
    return _IS_SUPPRESSED(conn, {"hash": key_hash(key)}).first() is not None


def add_respondent(
    conn: Connection,
    *,
    key: str,
    attributes: dict[str, Any],
    timezone: str | None,
    now: datetime,
    minted: bool = False,
) -> RespondentRow:
    """Insert a respondent; a key on the suppression list starts opted out.

    ``minted``: the key was made for this request from a random token, so it cannot be on
    the suppression list, and the person is being surveyed right now."""
    opted_out = False if minted else is_suppressed(conn, key=key)
    new_id = _ADD_RESPONDENT(
        conn,
        {
            "key": key,
            "attributes": attributes,
            "timezone": timezone,
            "opted_out": opted_out,
            "opted_out_at": now if opted_out else None,
            "created_at": now,
            "last_surveyed_at": now if minted else None,
        },
    ).scalar_one()
    return RespondentRow(new_id, key, attributes, opted_out, timezone, now if minted else None)


def lock_respondent(conn: Connection, *, id: int) -> dict[str, Any] | None:
    """The person's attributes as stored now, their row locked until the commit (PostgreSQL;
    SQLite has one writer). Taken before the conversation row, in the order opting out
    takes them, so an answer that saves to the profile and an opt-out never deadlock, and
    two answers saving different fields both keep theirs."""
    query = select(R.c.attributes).where(R.c.id == id).with_for_update(key_share=True)
    row = conn.execute(query).first()
    return None if row is None else dict(row[0] or {})  # None: forgotten meanwhile


def update_respondent(conn: Connection, *, id: int, **values: Any) -> None:
    _UPDATE_RESPONDENT(conn, {"_id": id, **values})


def suppress(conn: Connection, *, key: str, now: datetime) -> None:
    """Put the key on the do-not-survey list (already there is fine: a double click)."""
    _ADD_SUPPRESSION[conn.dialect.name](conn, {"key_hash": key_hash(key), "created_at": now})


def mark_opted_out(conn: Connection, *, id: int, now: datetime) -> bool:
    """Opt the person out; False when they already were (checked and set in one statement)."""
    return _MARK_OPTED_OUT(conn, {"_id": id, "_now": now}).rowcount == 1


def mark_surveyed(conn: Connection, *, id: int, now: datetime, not_since: datetime | None) -> bool:
    """Set ``last_surveyed_at``; with ``not_since``, only if it is not later than that (the
    frequency cap, checked and taken in one statement). False when the cap holds."""
    if not_since is None:
        update_respondent(conn, id=id, last_surveyed_at=now)
        return True
    marked = _MARK_SURVEYED(conn, {"_id": id, "_not_since": not_since, "_now": now})
    return marked.rowcount == 1


def is_opted_out(conn: Connection, *, id: int) -> bool:
    return bool(_IS_OPTED_OUT(conn, {"id": id}).scalar_one_or_none())


def open_conversation(conn: Connection, *, open_key: str) -> ConversationRow | None:
    row = _OPEN_CONVERSATION(conn, {"open_key": open_key}).one_or_none()
    return ConversationRow(*row) if row is not None else None


def conversations_of(conn: Connection, *, respondent_id: int) -> list[ConversationRow]:
    rows = _CONVERSATIONS_OF(conn, {"respondent_id": respondent_id})
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
    _INSERT_CONVERSATION(conn, values)


def save_state(conn: Connection, *, id: str, expected_version: int, values: dict[str, Any]) -> bool:
    """Compare-and-set: False when another request saved this conversation first."""
    result = _SAVE_STATE(
        conn,
        {"_id": id, "_version": expected_version, **values, "version": expected_version + 1},
    )
    return result.rowcount == 1


def insert_answer(conn: Connection, **values: Any) -> None:
    _INSERT_ANSWER(conn, values)


def insert_tags(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    # One statement per row: an answer adds a tag or two, and SQLAlchemy's executemany cost
    # more to set up than the rows took to write.
    for row in rows:
        _INSERT_TAG(conn, row)


def add_event(
    conn: Connection, *, kind: str, respondent_id: int | None, data: dict[str, Any], now: datetime
) -> None:
    _ADD_EVENT(
        conn, {"kind": kind, "respondent_id": respondent_id, "data": data, "created_at": now}
    )


def flow_version_id(
    conn: Connection,
    *,
    flow_id: str,
    hash: str,
    title: str,
    definition: dict[str, Any],
    now: datetime,
) -> tuple[int, bool]:
    """The row id of a flow version, storing it on first use (safe against a parallel
    insert); and whether it was stored before this transaction (False: stored just now)."""
    key = {"flow_id": flow_id, "hash": hash}
    found = _FIND_FLOW_VERSION(conn, key).scalar_one_or_none()
    if found is not None:
        return int(found), True
    try:
        with conn.begin_nested():
            return int(
                _ADD_FLOW_VERSION(
                    conn,
                    {**key, "title": title, "definition": definition, "created_at": now},
                ).scalar_one()
            ), False
    except IntegrityError:
        return int(_FIND_FLOW_VERSION(conn, key).scalar_one()), True


def flow_version(conn: Connection, *, id: int) -> tuple[str, dict[str, Any]] | None:
    row = _FLOW_VERSION(conn, {"id": id}).one_or_none()
    return (row[0], row[1]) if row is not None else None
