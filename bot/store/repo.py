"""Repository functions: keyword-only, take a session, never commit (services own transactions)."""

from __future__ import annotations

import hashlib
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any

from sqlalchemy import Connection, Table, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import SQLModel

from bot.store.models import (
    Answer,
    Conversation,
    Event,
    FlowVersion,
    PendingAnonymousAnswer,
    Respondent,
    Tag,
)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def get_respondent(session: AsyncSession, *, key: str) -> Respondent | None:
    return (
        await session.execute(select(Respondent).where(Respondent.key == key))
    ).scalar_one_or_none()


def new_conversation_id() -> str:
    """32 hex digits: the milliseconds since 1970 (12), then 80 random bits (20).

    Time first, so new conversations (and their answers, keyed by conversation and step)
    land at the end of their indexes: with random ids every conversation in a group commit
    dirtied a page of its own in each, and the commit wrote them all (about half of the
    pages an answer's commit wrote). The random part keeps ids unguessable; an id still
    opens nothing without its respondent's token."""
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"


def open_key(respondent_id: int, flow_id: str) -> str:
    return f"{respondent_id}:{flow_id}"


async def conversations_of(session: AsyncSession, *, respondent_id: int) -> Sequence[Conversation]:
    query = (
        select(Conversation)
        .where(Conversation.respondent_id == respondent_id)
        .order_by(Conversation.started_at)
    )
    return (await session.execute(query)).scalars().all()


async def flow_answers(
    session: AsyncSession, *, flow_id: str | None = None, batch: int = 2000
) -> AsyncIterator[tuple[Answer, str | None, str]]:
    """Stream (answer, respondent key, flow version hash), oldest first."""
    query = (
        select(Answer, Respondent.key, FlowVersion.hash)
        .join(FlowVersion, FlowVersion.id == Answer.flow_version_id)
        .outerjoin(Respondent, Respondent.id == Answer.respondent_id)
        .order_by(Answer.created_at, Answer.id)
        .execution_options(yield_per=batch)
    )
    if flow_id is not None:
        query = query.where(Answer.flow_id == flow_id)
    result = await session.stream(query)
    async for answer, key, version in result:
        yield answer, key, version


async def count_answers(session: AsyncSession, *, flow_id: str | None = None) -> int:
    query = select(func.count()).select_from(Answer)
    if flow_id is not None:
        query = query.where(Answer.flow_id == flow_id)
    return int((await session.execute(query)).scalar_one())


async def anonymous_waiting(session: AsyncSession, *, flow_id: str | None) -> int:
    """Responses (of one flow, or all) whose anonymous answers wait to join the others."""
    query = select(func.count(func.distinct(PendingAnonymousAnswer.response_id)))
    if flow_id is not None:
        query = query.where(PendingAnonymousAnswer.flow_id == flow_id)
    return int((await session.execute(query)).scalar_one())


async def conversation_counts(
    session: AsyncSession, *, flow_id: str
) -> tuple[dict[str, int], dict[str, int]]:
    """A flow's conversations by status and by the channel they ran in, in one query."""
    rows = await session.execute(
        select(Conversation.status, Conversation.channel, func.count())
        .where(Conversation.flow_id == flow_id)
        .group_by(Conversation.status, Conversation.channel)
    )
    statuses: Counter[str] = Counter()
    channels: Counter[str] = Counter()
    for status, channel, n in rows:
        statuses[str(status)] += int(n)
        channels[str(channel)] += int(n)
    return dict(statuses), dict(channels)


async def rows_of(session: AsyncSession, *, respondent_id: int) -> dict[str, list[Any]]:
    """Everything stored about one person (for export)."""
    out: dict[str, list[Any]] = {}
    conversations = await conversations_of(session, respondent_id=respondent_id)
    out["conversations"] = list(conversations)
    ids = [c.id for c in conversations]
    answers = (
        (
            await session.execute(
                select(Answer)
                .where((Answer.respondent_id == respondent_id) | Answer.conversation_id.in_(ids))
                .order_by(Answer.id)
            )
        )
        .scalars()
        .all()
    )
    out["answers"] = list(answers)
    out["tags"] = list(
        (
            await session.execute(
                select(Tag).where(Tag.respondent_id == respondent_id).order_by(Tag.id)
            )
        )
        .scalars()
        .all()
    )
    out["events"] = list(
        (
            await session.execute(
                select(Event).where(Event.respondent_id == respondent_id).order_by(Event.id)
            )
        )
        .scalars()
        .all()
    )
    return out


CORE_TABLES = frozenset(
    {"respondent", "suppression", "flow_version", "conversation", "answer", "tag", "event"}
)


def personal_tables() -> list[Table]:
    """Tables outside the core that hold a person's data (a channel's own tables, e.g.
    Slack's DM channels and question messages), found by their ``respondent_key`` or
    ``conversation_id`` column — so ``forget`` and ``export`` cover channels added later."""
    return [
        table
        for table in SQLModel.metadata.sorted_tables
        if table.name not in CORE_TABLES
        and ("respondent_key" in table.c or "conversation_id" in table.c)
    ]


def _person_rows(table: Table, key: str, conv_ids: Any) -> Any:
    if "respondent_key" in table.c and "conversation_id" in table.c:
        return (table.c.respondent_key == key) | table.c.conversation_id.in_(conv_ids)
    if "respondent_key" in table.c:
        return table.c.respondent_key == key
    return table.c.conversation_id.in_(conv_ids)


async def channel_rows_of(
    session: AsyncSession, *, respondent_id: int, key: str
) -> dict[str, list[dict[str, Any]]]:
    conv_ids = (
        select(Conversation.id).where(Conversation.respondent_id == respondent_id).scalar_subquery()
    )
    out: dict[str, list[dict[str, Any]]] = {}
    for table in personal_tables():
        rows = (
            (await session.execute(select(table).where(_person_rows(table, key, conv_ids))))
            .mappings()
            .all()
        )
        if rows:
            out[table.name] = [dict(row) for row in rows]
    return out


def _named_in_data(key: str) -> Any:
    """Events that named a person in their data before any row of theirs existed (Slack's
    undeliverable events did, until they were tied to the person's row only)."""
    return Event.respondent_id.is_(None) & (Event.data["key"].as_string() == key)


def delete_key_rows(conn: Connection, *, key: str) -> dict[str, int]:
    """What a channel keeps under a person's key when Parley holds no row for them (a DM
    from someone never surveyed, or kept after they were forgotten)."""
    counts: dict[str, int] = {}
    for table in reversed(personal_tables()):
        if "respondent_key" in table.c:
            deleted = conn.execute(delete(table).where(table.c.respondent_key == key)).rowcount
            if deleted:
                counts[table.name] = deleted
    events = conn.execute(delete(Event).where(_named_in_data(key))).rowcount
    if events:
        counts["events"] = events
    return counts


def delete_respondent(conn: Connection, *, respondent_id: int, key: str) -> dict[str, int]:
    """Delete every row of one person, children first; returns counts per table. Synchronous
    Core, run as a ``Database.run`` body: on SQLite every write goes through one writer."""
    conv_ids = (
        select(Conversation.id).where(Conversation.respondent_id == respondent_id).scalar_subquery()
    )
    counts: dict[str, int] = {}
    for table in reversed(personal_tables()):
        deleted = conn.execute(delete(table).where(_person_rows(table, key, conv_ids))).rowcount
        if deleted:
            counts[table.name] = deleted
    owned = {
        "tags": delete(Tag).where(
            (Tag.respondent_id == respondent_id) | Tag.conversation_id.in_(conv_ids)
        ),
        "answers": delete(Answer).where(
            (Answer.respondent_id == respondent_id) | Answer.conversation_id.in_(conv_ids)
        ),
        "events": delete(Event).where((Event.respondent_id == respondent_id) | _named_in_data(key)),
        "conversations": delete(Conversation).where(Conversation.respondent_id == respondent_id),
        "respondents": delete(Respondent).where(Respondent.id == respondent_id),
    }
    for name, statement in owned.items():
        counts[name] = conn.execute(statement).rowcount
    return counts
