"""Tables and repository functions the Slack channel needs to be exactly-once across replicas.

* ``slack_inbox`` — one row per Slack delivery (event id, message ``client_msg_id``): the
  INSERT is the claim, so a retried event or a second replica does nothing. The payload of a
  message is kept until it is handled, so a crash after the ack loses no answer.
* ``slack_message`` — one row per question message (conversation, step): claimed before
  ``chat.postMessage`` so a question is posted once, and remembered (channel, ts) so it can
  be ``chat.update``-d when it is answered.
* ``slack_dm`` — each person's DM channel id (``conversations.open`` is Tier 3).
* ``slack_installations`` / ``slack_bots`` / ``slack_oauth_states`` — slack_sdk's SQLAlchemy
  installation and OAuth-state store tables, declared here column for column (without
  importing slack_sdk, which only the channel may) so Alembic owns the whole schema;
  ``tests/test_slack_store.py`` checks they match slack_sdk's own definitions.

Functions are plain synchronous SQLAlchemy Core statements run inside ``Database.run`` /
``Database.read`` bodies (like :mod:`bot.store.statements`): keyword-only, they take a sync
``Connection`` and never commit — the body's caller owns the transaction. The SQLModel table
classes stay (Alembic and the models-vs-migrations test use them); Core uses their
``__table__``. Statements are built once at import with bound parameters (see
:mod:`bot.store.statements` for why).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import (
    JSON,
    Column,
    Connection,
    DateTime,
    bindparam,
    delete,
    exists,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Field, SQLModel

from bot.store.models import Conversation, Event, Respondent, utcnow
from bot.store.prepared import Prepared, insert_or_skip


def _ts(nullable: bool = False, index: bool = False) -> Any:
    return Field(
        default_factory=utcnow if not nullable else None,
        sa_column=Column(DateTime(timezone=True), nullable=nullable, index=index),
    )


class SlackInbox(SQLModel, table=True):
    """A Slack delivery claimed for handling; ``status`` is pending until it was handled."""

    __tablename__ = "slack_inbox"
    key: str = Field(primary_key=True, max_length=255)
    status: str = Field(default="pending", max_length=16)
    team_id: str | None = Field(default=None, max_length=32)
    # whose message the payload holds, so `parley forget` finds it before it is handled
    respondent_key: str | None = Field(default=None, max_length=200, index=True)
    payload: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    created_at: datetime = _ts()
    expires_at: datetime = _ts(index=True)


class SlackMessage(SQLModel, table=True):
    """The Slack message that asked one step of one conversation (``ts`` None = not sent yet)."""

    __tablename__ = "slack_message"
    conversation_id: str = Field(primary_key=True, max_length=32)
    step: str = Field(primary_key=True, max_length=64)
    team_id: str | None = Field(default=None, max_length=32)
    respondent_key: str = Field(max_length=200)
    channel: str | None = Field(default=None, max_length=32)
    ts: str | None = Field(default=None, max_length=32)
    question: str = Field(default="", max_length=3000)
    claimed_at: datetime = _ts(index=True)  # retaken by each recovery pass
    first_claimed_at: datetime | None = _ts(nullable=True)  # when this attempt began


class SlackDM(SQLModel, table=True):
    """A person's DM channel with the bot."""

    __tablename__ = "slack_dm"
    respondent_key: str = Field(primary_key=True, max_length=200)
    channel: str = Field(max_length=32)
    updated_at: datetime = _ts()


# --- slack_sdk's installation store tables (see module docstring) -----------------------------

_meta = SQLModel.metadata

slack_installations = sa.Table(
    "slack_installations",
    _meta,
    Column("id", sa.Integer, primary_key=True, autoincrement=True),
    Column("client_id", sa.String(32), nullable=False),
    Column("app_id", sa.String(32), nullable=False),
    Column("enterprise_id", sa.String(32)),
    Column("enterprise_name", sa.String(200)),
    Column("enterprise_url", sa.String(200)),
    Column("team_id", sa.String(32)),
    Column("team_name", sa.String(200)),
    Column("bot_token", sa.String(200)),
    Column("bot_id", sa.String(32)),
    Column("bot_user_id", sa.String(32)),
    Column("bot_scopes", sa.String(1000)),
    Column("bot_refresh_token", sa.String(200)),
    Column("bot_token_expires_at", sa.DateTime),
    Column("user_id", sa.String(32), nullable=False),
    Column("user_token", sa.String(200)),
    Column("user_scopes", sa.String(1000)),
    Column("user_refresh_token", sa.String(200)),
    Column("user_token_expires_at", sa.DateTime),
    Column("incoming_webhook_url", sa.String(200)),
    Column("incoming_webhook_channel", sa.String(200)),
    Column("incoming_webhook_channel_id", sa.String(200)),
    Column("incoming_webhook_configuration_url", sa.String(200)),
    Column("is_enterprise_install", sa.Boolean, default=False, nullable=False),
    Column("token_type", sa.String(32)),
    Column("installed_at", sa.DateTime, nullable=False, default=func.now()),
    sa.Index(
        "slack_installations_idx",
        "client_id",
        "enterprise_id",
        "team_id",
        "user_id",
        "installed_at",
    ),
)

slack_bots = sa.Table(
    "slack_bots",
    _meta,
    Column("id", sa.Integer, primary_key=True, autoincrement=True),
    Column("client_id", sa.String(32), nullable=False),
    Column("app_id", sa.String(32), nullable=False),
    Column("enterprise_id", sa.String(32)),
    Column("enterprise_name", sa.String(200)),
    Column("team_id", sa.String(32)),
    Column("team_name", sa.String(200)),
    Column("bot_token", sa.String(200)),
    Column("bot_id", sa.String(32)),
    Column("bot_user_id", sa.String(32)),
    Column("bot_scopes", sa.String(1000)),
    Column("bot_refresh_token", sa.String(200)),
    Column("bot_token_expires_at", sa.DateTime),
    Column("is_enterprise_install", sa.Boolean, default=False, nullable=False),
    Column("installed_at", sa.DateTime, nullable=False, default=func.now()),
    sa.Index("slack_bots_idx", "client_id", "enterprise_id", "team_id", "installed_at"),
)

slack_oauth_states = sa.Table(
    "slack_oauth_states",
    _meta,
    Column("id", sa.Integer, primary_key=True, autoincrement=True),
    Column("state", sa.String(200), nullable=False),
    Column("expire_at", sa.DateTime, nullable=False),
)


# --- helpers ------------------------------------------------------------------------------------

INBOX = SlackInbox.__table__
MESSAGE = SlackMessage.__table__
DM = SlackDM.__table__
_C = Conversation.__table__
_R = Respondent.__table__
_E = Event.__table__


@dataclass(frozen=True)
class PendingDelivery:
    """A claimed delivery whose handler never finished (see :func:`stale_deliveries`)."""

    key: str
    team_id: str | None
    payload: dict[str, Any] | None


@dataclass(frozen=True)
class MessageRow:
    """One ``slack_message`` row."""

    conversation_id: str
    step: str
    team_id: str | None
    respondent_key: str
    channel: str | None
    ts: str | None
    question: str
    claimed_at: datetime


@dataclass(frozen=True)
class PastConversation:
    flow_id: str
    status: str
    updated_at: datetime


_MESSAGE_COLUMNS = (
    MESSAGE.c.conversation_id,
    MESSAGE.c.step,
    MESSAGE.c.team_id,
    MESSAGE.c.respondent_key,
    MESSAGE.c.channel,
    MESSAGE.c.ts,
    MESSAGE.c.question,
    MESSAGE.c.claimed_at,
)


def _upsert_dm() -> dict[str, Prepared]:
    statements: dict[str, Any] = {}
    for name, make in (("postgresql", pg_insert), ("sqlite", sqlite_insert)):
        statement = make(DM)
        statements[name] = Prepared(
            statement.on_conflict_do_update(
                index_elements=["respondent_key"],
                set_={
                    "channel": statement.excluded.channel,
                    "updated_at": statement.excluded.updated_at,
                },
            )
        )
    return statements


_CLAIM_DELIVERY = insert_or_skip(INBOX)
_RETAKE_DELIVERY = Prepared(
    update(INBOX)
    .where(
        INBOX.c.key == bindparam("_key"),
        INBOX.c.status == "pending",
        INBOX.c.created_at < bindparam("_stale_before"),
    )
    .values(created_at=bindparam("_now"))
)
_FINISH_DELIVERY = Prepared(
    update(INBOX).where(INBOX.c.key == bindparam("_key")).values(status="done", payload=None)
)
_THIS_MESSAGE = (
    MESSAGE.c.conversation_id == bindparam("_conversation_id"),
    MESSAGE.c.step == bindparam("_step"),
)
_CLAIM_MESSAGE = insert_or_skip(MESSAGE)
_RETAKE_MESSAGE = Prepared(
    update(MESSAGE)
    .where(
        *_THIS_MESSAGE,
        MESSAGE.c.ts.is_(None),
        MESSAGE.c.claimed_at < bindparam("_stale_before"),
    )
    .values(claimed_at=bindparam("_now"))
)
_UPDATE_MESSAGE = Prepared(update(MESSAGE).where(*_THIS_MESSAGE))
_RELEASE_MESSAGE = Prepared(delete(MESSAGE).where(*_THIS_MESSAGE, MESSAGE.c.ts.is_(None)))
_GET_MESSAGE = Prepared(select(*_MESSAGE_COLUMNS).where(*_THIS_MESSAGE))
_GET_DM = Prepared(select(DM.c.channel).where(DM.c.respondent_key == bindparam("key")))
_SET_DM = _upsert_dm()


# --- inbox (dedupe) -----------------------------------------------------------------------------


def claim_delivery(
    conn: Connection,
    *,
    key: str,
    ttl: timedelta,
    team_id: str | None = None,
    payload: dict[str, Any] | None = None,
    respondent_key: str | None = None,
    stale_after: timedelta = timedelta(seconds=60),
    now: datetime | None = None,
) -> bool:
    """True when this caller should handle the delivery: first sight, or a pending claim so
    old that whoever took it must have crashed (Slack's retry then gets it handled)."""
    now = now or utcnow()
    row = {
        "key": key[:255],
        "status": "pending",
        "team_id": team_id,
        "payload": payload,
        "respondent_key": respondent_key,
        "created_at": now,
        "expires_at": now + ttl,
    }
    if _CLAIM_DELIVERY[conn.dialect.name](conn, row).rowcount == 1:
        return True
    retake = {"_key": key[:255], "_stale_before": now - stale_after, "_now": now}
    return _RETAKE_DELIVERY(conn, retake).rowcount == 1


def finish_delivery(conn: Connection, *, key: str) -> None:
    """Handled: keep the key (for dedupe until it expires) but drop the payload."""
    _FINISH_DELIVERY(conn, {"_key": key[:255]})


def give_up_deliveries(conn: Connection, *, now: datetime | None = None) -> int:
    """Pending deliveries still failing when their key expires are dropped (a day of retries
    is enough; a payload that always fails must not be retried forever)."""
    result = conn.execute(
        update(INBOX)
        .where(INBOX.c.status == "pending", INBOX.c.expires_at < (now or utcnow()))
        .values(status="done", payload=None)
    )
    return int(result.rowcount or 0)


def stale_deliveries(
    conn: Connection, *, older_than: datetime, limit: int = 100, now: datetime | None = None
) -> list[PendingDelivery]:
    """Pending deliveries with a payload whose handler never finished (a crash after the ack),
    not yet expired (an expired one is given up, even before ``give_up_deliveries`` ran)."""
    query = (
        select(INBOX.c.key, INBOX.c.team_id, INBOX.c.payload)
        .where(
            INBOX.c.status == "pending",
            INBOX.c.payload.is_not(None),
            INBOX.c.created_at < older_than,
            INBOX.c.expires_at >= (now or utcnow()),
        )
        .order_by(INBOX.c.created_at)
        .limit(limit)
    )
    return [PendingDelivery(*row) for row in conn.execute(query)]


def purge_deliveries(conn: Connection, *, now: datetime | None = None) -> int:
    """Drop handled keys past their TTL (pending ones stay until recovered)."""
    now = now or utcnow()
    result = conn.execute(delete(INBOX).where(INBOX.c.expires_at < now, INBOX.c.status == "done"))
    return result.rowcount or 0


# --- question messages --------------------------------------------------------------------------


def claim_message(
    conn: Connection,
    *,
    conversation_id: str,
    step: str,
    respondent_key: str,
    team_id: str | None,
    question: str,
    stale_after: timedelta = timedelta(seconds=60),
    now: datetime | None = None,
) -> bool:
    """True when this caller should post the question of (conversation, step)."""
    now = now or utcnow()
    row = {
        "conversation_id": conversation_id,
        "step": step,
        "respondent_key": respondent_key,
        "team_id": team_id,
        "question": question[:3000],
        "claimed_at": now,
        "first_claimed_at": now,
    }
    if _CLAIM_MESSAGE[conn.dialect.name](conn, row).rowcount == 1:
        return True
    retake = {
        "_conversation_id": conversation_id,
        "_step": step,
        "_stale_before": now - stale_after,
        "_now": now,
    }
    return _RETAKE_MESSAGE(conn, retake).rowcount == 1


def repost_message(conn: Connection, *, conversation_id: str, step: str, question: str) -> None:
    """The respondent came back: the question is posted again (the new message is the live one)."""
    this = {"_conversation_id": conversation_id, "_step": step}
    now = utcnow()
    _UPDATE_MESSAGE(
        conn, {**this, "question": question[:3000], "claimed_at": now, "first_claimed_at": now}
    )


def message_posted(
    conn: Connection, *, conversation_id: str, step: str, channel: str, ts: str
) -> None:
    this = {"_conversation_id": conversation_id, "_step": step}
    _UPDATE_MESSAGE(conn, {**this, "channel": channel[:32], "ts": ts[:32]})


def closing_said(conn: Connection, *, conversation_id: str, channel: str, ts: str) -> None:
    """A survey's closing words are in Slack: the claim is done, and the words it kept (they
    may pipe an answer) go; the row itself goes at the next cleanup."""
    this = {"_conversation_id": conversation_id, "_step": CLOSING}
    _UPDATE_MESSAGE(conn, {**this, "channel": channel[:32], "ts": ts[:32], "question": ""})


def let_go_message(
    conn: Connection, *, conversation_id: str, step: str, stale_at: datetime
) -> None:
    """Posting failed for now and nobody is posting any more: the claim reads as stale
    (``stale_at``), so the sweep — or the person asking for the question — takes it over."""
    conn.execute(
        update(MESSAGE)
        .where(
            MESSAGE.c.conversation_id == conversation_id,
            MESSAGE.c.step == step,
            MESSAGE.c.ts.is_(None),
        )
        .values(claimed_at=stale_at)
    )


def release_message(conn: Connection, *, conversation_id: str, step: str) -> bool:
    """Posting failed: let a later attempt claim it again. False: nothing was left to release
    (posted meanwhile, or released by someone else)."""
    released = _RELEASE_MESSAGE(conn, {"_conversation_id": conversation_id, "_step": step})
    return released.rowcount == 1


CLOSING = "@end"  # the step a survey's closing words are claimed under (no question has it)
# what a cleanup may delete: question rows, and closing words already said (an unsaid claim
# waits for the sweep; a said one stays until then, so a second sweep cannot claim it anew)
_DISPOSABLE = (MESSAGE.c.step != CLOSING) | MESSAGE.c.ts.is_not(None)


def drop_messages(conn: Connection, *, conversation_id: str) -> None:
    """The conversation is over: its question messages are needed no more (and a question
    may pipe an earlier answer, which an anonymous flow must not keep beside the person).
    The claim on its closing words stays until they are posted."""
    conn.execute(delete(MESSAGE).where(MESSAGE.c.conversation_id == conversation_id, _DISPOSABLE))


def drop_closed_messages(conn: Connection) -> int:
    """Question copies of conversations that closed some other way than by their last
    answer (opt-out, expiry, stop): kept no longer than a recovery pass."""
    # driven from slack_message (a few rows per open conversation), one primary-key lookup
    # each: never a scan of every conversation ever closed
    closed = exists().where(_C.c.id == MESSAGE.c.conversation_id, _C.c.open_key.is_(None))
    result = conn.execute(delete(MESSAGE).where(closed, _DISPOSABLE))
    return int(result.rowcount or 0)


def get_message(conn: Connection, *, conversation_id: str, step: str) -> MessageRow | None:
    this = {"_conversation_id": conversation_id, "_step": step}
    row = _GET_MESSAGE(conn, this).one_or_none()
    return MessageRow(*row) if row is not None else None


def waits_on(conn: Connection, *, conversation_id: str, step: str) -> bool:
    """Whether the conversation is open and asking ``step`` now."""
    table = Conversation.__table__  # type: ignore[attr-defined]
    query = select(table.c.current_step, table.c.open_key).where(table.c.id == conversation_id)
    row = conn.execute(query).first()
    return row is not None and row[1] is not None and row[0] == step


def shown_messages(conn: Connection, *, respondent_key: str) -> list[MessageRow]:
    """The question messages a person has in Slack that Parley still knows of."""
    query = select(*_MESSAGE_COLUMNS).where(
        MESSAGE.c.respondent_key == respondent_key, MESSAGE.c.ts.is_not(None)
    )
    return [MessageRow(*row) for row in conn.execute(query)]


def unsent_messages(
    conn: Connection, *, older_than: datetime, limit: int = 100
) -> list[MessageRow]:
    """Questions claimed but never posted (a crash between the answer and the reply)."""
    query = (
        select(*_MESSAGE_COLUMNS)
        .where(MESSAGE.c.ts.is_(None), MESSAGE.c.claimed_at < older_than)
        .order_by(MESSAGE.c.claimed_at)
        .limit(limit)
    )
    return [MessageRow(*row) for row in conn.execute(query)]


# --- DM channels --------------------------------------------------------------------------------


def give_up_messages(
    conn: Connection, *, older_than: datetime, stale_before: datetime
) -> list[MessageRow]:
    """Questions still unsent although their first claim is older than ``older_than``:
    dropped (a day of retries is enough) and returned, so the caller can say so. Only
    claims nobody holds now (``claimed_at`` before ``stale_before``): one being posted this
    very moment is not given up under its sender."""
    stuck = select(*_MESSAGE_COLUMNS).where(
        MESSAGE.c.ts.is_(None),
        func.coalesce(MESSAGE.c.first_claimed_at, MESSAGE.c.claimed_at) < older_than,
        MESSAGE.c.claimed_at < stale_before,
    )
    given_up = []
    for row in [MessageRow(*row) for row in conn.execute(stuck)]:
        if not release_message(conn, conversation_id=row.conversation_id, step=row.step):
            continue  # another replica's sweep gave it up (and recorded it) first
        record_undeliverable(
            conn,
            respondent_key=row.respondent_key,
            error="still failing after a day",
            method="chat.postMessage",
        )
        given_up.append(row)
    return given_up


def get_dm(conn: Connection, *, respondent_key: str) -> str | None:
    found = _GET_DM(conn, {"key": respondent_key}).scalar_one_or_none()
    return str(found) if found is not None else None


def set_dm(conn: Connection, *, respondent_key: str, channel: str) -> None:
    row = {"respondent_key": respondent_key, "channel": channel[:32], "updated_at": utcnow()}
    _SET_DM[conn.dialect.name](conn, row)


# --- history and failures -------------------------------------------------------------------------


def past_conversations(
    conn: Connection, *, respondent_key: str, limit: int = 10
) -> list[PastConversation]:
    """A person's finished conversations, newest first (for the App Home)."""
    query = (
        select(_C.c.flow_id, _C.c.status, _C.c.updated_at)
        .join_from(_C, _R, _R.c.id == _C.c.respondent_id)
        .where(_R.c.key == respondent_key, _C.c.open_key.is_(None))
        .order_by(_C.c.updated_at.desc())
        .limit(limit)
    )
    return [PastConversation(*row) for row in conn.execute(query)]


def record_undeliverable(conn: Connection, *, respondent_key: str, error: str, method: str) -> None:
    """A Slack error that will never succeed (user_not_found, user_disabled): kept, not retried.
    Tied to the person by their row only, so ``forget`` and ``export`` find it; someone Parley
    holds no row for is not named (the log says who, once)."""
    respondent_id = conn.execute(
        select(_R.c.id).where(_R.c.key == respondent_key)
    ).scalar_one_or_none()
    conn.execute(
        insert(_E).values(
            kind="slack.undeliverable",
            respondent_id=respondent_id,
            data={"error": error[:100], "method": method[:64]},
            created_at=utcnow(),
        )
    )


def conversation_count(conn: Connection, *, respondent_key: str) -> int:
    """How many conversations a person ever had (0 = first contact)."""
    query = (
        select(func.count())
        .select_from(_C)
        .join(_R, _R.c.id == _C.c.respondent_id)
        .where(_R.c.key == respondent_key)
    )
    return int(conn.execute(query).scalar_one())
