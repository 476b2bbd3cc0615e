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

Functions are keyword-only, take a session and never commit: the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import JSON, Column, DateTime, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel

from bot.store.models import Conversation, Event, Respondent, utcnow


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
    claimed_at: datetime = _ts(index=True)


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


def _insert(session: AsyncSession, model: type[SQLModel]) -> Any:
    """INSERT … ON CONFLICT DO NOTHING for the session's dialect (SQLite or PostgreSQL)."""
    dialect = session.get_bind().dialect.name
    return (pg_insert if dialect == "postgresql" else sqlite_insert)(model)


# --- inbox (dedupe) -----------------------------------------------------------------------------


async def claim_delivery(
    session: AsyncSession,
    *,
    key: str,
    ttl: timedelta,
    team_id: str | None = None,
    payload: dict[str, Any] | None = None,
    stale_after: timedelta = timedelta(seconds=60),
    now: datetime | None = None,
) -> bool:
    """True when this caller should handle the delivery: first sight, or a pending claim so
    old that whoever took it must have crashed (Slack's retry then gets it handled)."""
    now = now or utcnow()
    statement = (
        _insert(session, SlackInbox)
        .values(
            key=key[:255],
            status="pending",
            team_id=team_id,
            payload=payload,
            created_at=now,
            expires_at=now + ttl,
        )
        .on_conflict_do_nothing()
    )
    if (await session.execute(statement)).rowcount == 1:
        return True
    retake = (
        update(SlackInbox)
        .where(
            SlackInbox.key == key[:255],
            SlackInbox.status == "pending",
            SlackInbox.created_at < now - stale_after,
        )
        .values(created_at=now)
    )
    return (await session.execute(retake)).rowcount == 1


async def finish_delivery(session: AsyncSession, *, key: str) -> None:
    """Handled: keep the key (for dedupe until it expires) but drop the payload."""
    await session.execute(
        update(SlackInbox).where(SlackInbox.key == key[:255]).values(status="done", payload=None)
    )


async def release_delivery(session: AsyncSession, *, key: str) -> None:
    """Handling failed in a way a retry may fix: forget the claim."""
    await session.execute(
        delete(SlackInbox).where(SlackInbox.key == key[:255], SlackInbox.status == "pending")
    )


async def stale_deliveries(
    session: AsyncSession, *, older_than: datetime, limit: int = 100
) -> Sequence[SlackInbox]:
    """Pending deliveries with a payload whose handler never finished (a crash after the ack)."""
    query = (
        select(SlackInbox)
        .where(
            SlackInbox.status == "pending",
            SlackInbox.payload.is_not(None),
            SlackInbox.created_at < older_than,
        )  # type: ignore[union-attr]
        .order_by(SlackInbox.created_at)
        .limit(limit)
    )
    return (await session.execute(query)).scalars().all()


async def purge_deliveries(session: AsyncSession, *, now: datetime | None = None) -> int:
    """Drop handled keys past their TTL (pending ones stay until recovered)."""
    now = now or utcnow()
    result = await session.execute(
        delete(SlackInbox).where(SlackInbox.expires_at < now, SlackInbox.status == "done")
    )
    return result.rowcount or 0


# --- question messages --------------------------------------------------------------------------


async def claim_message(
    session: AsyncSession,
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
    statement = (
        _insert(session, SlackMessage)
        .values(
            conversation_id=conversation_id,
            step=step,
            respondent_key=respondent_key,
            team_id=team_id,
            question=question[:3000],
            claimed_at=now,
        )
        .on_conflict_do_nothing()
    )
    if (await session.execute(statement)).rowcount == 1:
        return True
    retake = (
        update(SlackMessage)
        .where(
            SlackMessage.conversation_id == conversation_id,
            SlackMessage.step == step,
            SlackMessage.ts.is_(None),  # type: ignore[union-attr]
            SlackMessage.claimed_at < now - stale_after,
        )
        .values(claimed_at=now)
    )
    return (await session.execute(retake)).rowcount == 1


async def repost_message(
    session: AsyncSession, *, conversation_id: str, step: str, question: str
) -> None:
    """The respondent came back: the question is posted again (the new message is the live one)."""
    await session.execute(
        update(SlackMessage)
        .where(SlackMessage.conversation_id == conversation_id, SlackMessage.step == step)
        .values(question=question[:3000], claimed_at=utcnow())
    )


async def message_posted(
    session: AsyncSession, *, conversation_id: str, step: str, channel: str, ts: str
) -> None:
    await session.execute(
        update(SlackMessage)
        .where(SlackMessage.conversation_id == conversation_id, SlackMessage.step == step)
        .values(channel=channel[:32], ts=ts[:32])
    )


async def release_message(session: AsyncSession, *, conversation_id: str, step: str) -> None:
    """Posting failed: let a later attempt claim it again."""
    await session.execute(
        delete(SlackMessage).where(
            SlackMessage.conversation_id == conversation_id,
            SlackMessage.step == step,
            SlackMessage.ts.is_(None),  # type: ignore[union-attr]
        )
    )


async def get_message(
    session: AsyncSession, *, conversation_id: str, step: str
) -> SlackMessage | None:
    return await session.get(SlackMessage, (conversation_id, step))


async def unsent_messages(
    session: AsyncSession, *, older_than: datetime, limit: int = 100
) -> Sequence[SlackMessage]:
    """Questions claimed but never posted (a crash between the answer and the reply)."""
    query = (
        select(SlackMessage)
        .where(SlackMessage.ts.is_(None), SlackMessage.claimed_at < older_than)  # type: ignore[union-attr]
        .order_by(SlackMessage.claimed_at)
        .limit(limit)
    )
    return (await session.execute(query)).scalars().all()


# --- DM channels --------------------------------------------------------------------------------


async def get_dm(session: AsyncSession, *, respondent_key: str) -> str | None:
    row = await session.get(SlackDM, respondent_key)
    return row.channel if row is not None else None


async def set_dm(session: AsyncSession, *, respondent_key: str, channel: str) -> None:
    statement = _insert(session, SlackDM).values(
        respondent_key=respondent_key, channel=channel[:32], updated_at=utcnow()
    )
    statement = statement.on_conflict_do_update(
        index_elements=["respondent_key"], set_={"channel": channel[:32], "updated_at": utcnow()}
    )
    await session.execute(statement)


# --- history and failures -------------------------------------------------------------------------


async def past_conversations(
    session: AsyncSession, *, respondent_key: str, limit: int = 10
) -> Sequence[Conversation]:
    """A person's finished conversations, newest first (for the App Home)."""
    query = (
        select(Conversation)
        .join(Respondent, Respondent.id == Conversation.respondent_id)
        .where(Respondent.key == respondent_key, Conversation.open_key.is_(None))  # type: ignore[union-attr]
        .order_by(Conversation.updated_at.desc())  # type: ignore[attr-defined]
        .limit(limit)
    )
    return (await session.execute(query)).scalars().all()


async def record_undeliverable(
    session: AsyncSession, *, respondent_key: str, error: str, method: str
) -> None:
    """A Slack error that will never succeed (user_not_found, account_inactive): kept, not retried."""
    respondent = await session.execute(
        select(Respondent.id).where(Respondent.key == respondent_key)
    )
    session.add(
        Event(
            respondent_id=respondent.scalar_one_or_none(),
            kind="slack.undeliverable",
            data={"key": respondent_key, "error": error[:100], "method": method[:64]},
        )
    )


async def conversation_count(session: AsyncSession, *, respondent_key: str) -> int:
    """How many conversations a person ever had (0 = first contact)."""
    query = (
        select(func.count())
        .select_from(Conversation)
        .join(Respondent, Respondent.id == Conversation.respondent_id)
        .where(Respondent.key == respondent_key)
    )
    return int((await session.execute(query)).scalar_one())
