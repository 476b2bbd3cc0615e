"""Anonymous answers join the answer table in batches, never one conversation at a time.

Why: rows written in one transaction share its id (PostgreSQL's ``xmin``) and sit beside each
other in the table, so an answer stored in the transaction that closes its conversation — or
that records the person's next answer — could be joined back to the conversation and so to
the person. An anonymous conversation keeps its answers in its own state while it is open (to
resume); closing it queues them in ``anonymous_pending`` (with the hour, not the moment) and
forgets them there. ``release`` moves a flow's queued answers once at least
``MIN_RESPONSES`` of its responses wait (or its oldest has waited ``MAX_WAIT``): all of them
together, in one transaction of its own, in random order, each under a new random response id
(a copy of the queue — a backup — must not find them again) and with only its day.

While they wait, the queue row and the conversation's closing update share a transaction: for
that day at most, someone reading the database can tie them together, as they could read an
open conversation's state. A flow with one response a day still releases it after a day.
"""

from __future__ import annotations

import random
import secrets
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select

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
    queued under its random response id; skipped questions store nothing, as elsewhere, and
    neither do answers stored one by one before answers were queued (a conversation open
    across the upgrade)."""
    if not state.response:
        return
    stored = set(
        conn.execute(
            select(_ANSWER.c.step_id).where(_ANSWER.c.response_id == state.response)
        ).scalars()
    )
    rows = [
        {
            "response_id": state.response,
            "flow_id": flow.id,
            "flow_version_id": version_id,
            "step_id": step,
            "step_type": flow.step(step).type,
            "value": value,
            "day": day_of(now),  # the day its conversation closed: the only time it keeps
            "queued_at": now.replace(minute=0, second=0, microsecond=0),  # not the moment
        }
        for step, value in state.answers.items()
        if value is not None and flow.has_step(step) and step not in stored
    ]
    if rows:
        conn.execute(insert(_PENDING), rows)


def release_due(
    conn: Connection,
    *,
    now: datetime,
    min_responses: int = MIN_RESPONSES,
    max_wait: timedelta = MAX_WAIT,
) -> int:
    """Move the queued answers of every flow that is due into ``answer``; returns how many
    were stored. One transaction, safe on every replica: the queued rows are locked as they
    are read, so a second replica finds them gone rather than store them twice (and
    ``queue`` left out what was stored one by one before the upgrade)."""
    per_flow = conn.execute(
        select(
            _PENDING.c.flow_id,
            func.count(func.distinct(_PENDING.c.response_id)),
            func.min(_PENDING.c.queued_at),
        ).group_by(_PENDING.c.flow_id)
    ).all()
    due = [
        flow_id
        for flow_id, responses, oldest in per_flow
        if responses >= min_responses or as_utc(oldest) <= now - max_wait
    ]
    if not due:
        return 0
    pending = [
        dict(row)
        for row in conn.execute(
            select(_PENDING).where(_PENDING.c.flow_id.in_(due)).with_for_update()
        ).mappings()
    ]
    _SHUFFLE.shuffle(pending)
    renamed: dict[str, str] = {}  # queued response id -> the one it is stored under
    answers = [
        {
            "id": -1 - secrets.randbelow(2**62),  # insertion order would say which came when
            "response_id": renamed.setdefault(row["response_id"], secrets.token_hex(16)),
            "flow_id": row["flow_id"],
            "flow_version_id": row["flow_version_id"],
            "step_id": row["step_id"],
            "step_type": row["step_type"],
            "value": row["value"],
            "created_at": as_utc(row["day"]),
        }
        for row in pending
    ]
    if answers:  # in the shuffled order, as one statement
        conn.execute(insert(_ANSWER), answers)
    conn.execute(delete(_PENDING).where(_PENDING.c.id.in_([row["id"] for row in pending])))
    return len(answers)


async def release(db: Database, **limits: Any) -> int:
    """``release_due`` now, as its own transaction."""
    return await db.run(partial(release_due, now=utcnow(), **limits))


def waiting_note(responses: int) -> str:
    """What results and exports say of the answers still queued (not in their numbers)."""
    what = "1 anonymous response" if responses == 1 else f"{responses} anonymous responses"
    return (
        f"{what} not counted yet: anonymous answers join the others in batches of "
        f"{MIN_RESPONSES} responses to a flow, or after a day"
    )
