"""Anonymous answers join the answer table in batches, never one conversation at a time.

Why: rows written in one transaction share its id (PostgreSQL's ``xmin``) and sit beside each
other in the table, so an answer stored in the transaction that closes its conversation — or
that records the person's next answer — could be joined back to the conversation and so to
the person. An anonymous conversation keeps its answers in its own state while it is open (to
resume); closing it queues them in ``anonymous_pending`` and forgets them there. ``release``
moves queued answers once at least ``MIN_RESPONSES`` responses wait (or the oldest has waited
``MAX_WAIT``), all of them together in one transaction of their own, in random order, each
with a random id and only its day.
"""

from __future__ import annotations

import random
import secrets
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from bot.engine.state import ConversationState
from bot.flow import Flow
from bot.store.database import Database
from bot.store.models import Answer, PendingAnonymousAnswer, as_utc, utcnow

MIN_RESPONSES = 5  # the answers of fewer responses than this wait (a small anonymity set)…
MAX_WAIT = timedelta(days=1)  # …but not longer than this: results must arrive
_PENDING = PendingAnonymousAnswer.__table__
_ANSWER = Answer.__table__
_SHUFFLE = random.SystemRandom()


def day_of(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def queue(
    conn: Connection, flow: Flow, state: ConversationState, version_id: int, now: datetime
) -> None:
    """The answers of a closing anonymous conversation (its state before forgetting them),
    queued under its random response id; skipped questions store nothing, as elsewhere."""
    rows = [
        {
            "response_id": state.response,
            "flow_id": flow.id,
            "flow_version_id": version_id,
            "step_id": step,
            "step_type": flow.step(step).type,
            "value": value,
            "day": day_of(now),
            "queued_at": now,
        }
        for step, value in state.answers.items()
        if value is not None and flow.has_step(step)
    ]
    if rows and state.response:
        conn.execute(insert(_PENDING), rows)


def release_due(
    conn: Connection,
    *,
    now: datetime,
    min_responses: int = MIN_RESPONSES,
    max_wait: timedelta = MAX_WAIT,
) -> int:
    """Move the queued answers into ``answer`` when enough responses wait or the oldest has
    waited long enough; returns how many moved. One transaction; safe on every replica (an
    answer moved twice is one row)."""
    responses, oldest = conn.execute(
        select(func.count(func.distinct(_PENDING.c.response_id)), func.min(_PENDING.c.queued_at))
    ).one()
    if not responses or (responses < min_responses and as_utc(oldest) > now - max_wait):
        return 0
    pending = [dict(row) for row in conn.execute(select(_PENDING)).mappings()]
    _SHUFFLE.shuffle(pending)
    answers = [
        {
            "id": -1 - secrets.randbelow(2**62),  # insertion order would say which came when
            "response_id": row["response_id"],
            "flow_id": row["flow_id"],
            "flow_version_id": row["flow_version_id"],
            "step_id": row["step_id"],
            "step_type": row["step_type"],
            "value": row["value"],
            "created_at": as_utc(row["day"]),
        }
        for row in pending
    ]
    for answer in answers:  # one by one: an answer already there (moved twice) is skipped
        conn.execute(_insert_new(conn).values(**answer))
    conn.execute(delete(_PENDING).where(_PENDING.c.id.in_([row["id"] for row in pending])))
    return len(answers)


def _insert_new(conn: Connection) -> Any:
    """INSERT that skips an answer whose (response, step) is stored already: answered before
    answers were queued (a conversation open across the upgrade), or moved by another replica."""
    dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    return dialect_insert(_ANSWER).on_conflict_do_nothing()


async def release(db: Database, **limits: Any) -> int:
    """``release_due`` now, as its own transaction."""
    return await db.run(partial(release_due, now=utcnow(), **limits))
