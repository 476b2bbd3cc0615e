"""SQLModel tables. Migrations in ``bot/store/migrations`` create exactly this schema
(a test compares them), so change both together: add a migration, never edit the first.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, DateTime, Index, Integer, UniqueConstraint, text
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """A stored time with its zone: times are stored in UTC, and SQLite hands them back naive."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _ts(nullable: bool = False, index: bool = False) -> Any:
    return Field(
        default_factory=utcnow if not nullable else None,
        sa_column=Column(DateTime(timezone=True), nullable=nullable, index=index),
    )


class Respondent(SQLModel, table=True):
    """A person, known by a channel key: ``web:<hash of the token>``, ``slack:<team>:<user>``, ``cli:<name>``."""

    __tablename__ = "respondent"
    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=200, unique=True, index=True)
    attributes: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    timezone: str | None = Field(default=None, max_length=64)
    opted_out: bool = Field(default=False)
    opted_out_at: datetime | None = _ts(nullable=True)
    last_surveyed_at: datetime | None = _ts(nullable=True)
    created_at: datetime = _ts()


class Suppression(SQLModel, table=True):
    """Opt-outs that outlive ``forget``: only a hash of the key, so the person stays unsurveyed."""

    __tablename__ = "suppression"
    key_hash: str = Field(primary_key=True, max_length=64)
    created_at: datetime = _ts()


class FlowVersion(SQLModel, table=True):
    """The exact flow (includes expanded) that conversations and answers refer to."""

    __tablename__ = "flow_version"
    __table_args__ = (UniqueConstraint("flow_id", "hash", name="uq_flow_version_flow_hash"),)
    id: int | None = Field(default=None, primary_key=True)
    flow_id: str = Field(max_length=64, index=True)
    hash: str = Field(max_length=64)
    title: str = Field(max_length=3000)
    definition: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    created_at: datetime = _ts()


class Conversation(SQLModel, table=True):
    """One respondent taking one flow version; ``open_key`` makes "one open per flow" a constraint."""

    __tablename__ = "conversation"
    id: str = Field(primary_key=True, max_length=32)
    respondent_id: int = Field(foreign_key="respondent.id", index=True)
    flow_id: str = Field(max_length=64, index=True)
    flow_version_id: int = Field(foreign_key="flow_version.id")
    channel: str = Field(max_length=32)
    status: str = Field(max_length=16)  # no index: nothing picks by status alone (0007)
    current_step: str | None = Field(default=None, max_length=64)
    state: str
    version: int = Field(default=0)
    open_key: str | None = Field(default=None, max_length=120, unique=True)
    started_at: datetime = _ts()
    updated_at: datetime = _ts()
    completed_at: datetime | None = _ts(nullable=True)


class Answer(SQLModel, table=True):
    """One accepted answer; the unique keys turn a double submit into a no-op.

    Answers to ``anonymous`` flows have no conversation and no respondent: they are grouped
    by a random ``response_id`` that nothing else stores once the conversation closes, take
    a random id (an id in insertion order would rank them beside the person's other rows)
    and keep only the day they were given (their exact time matched the conversation's).
    """

    __tablename__ = "answer"
    __table_args__ = (
        UniqueConstraint("conversation_id", "step_id", name="uq_answer_conversation_step"),
        # anonymous answers only: any other answer's (NULL, step) entry could never conflict
        Index(
            "uq_answer_response_step",
            "response_id",
            "step_id",
            unique=True,
            sqlite_where=text("response_id IS NOT NULL"),
            postgresql_where=text("response_id IS NOT NULL"),
        ),
        Index("ix_answer_flow_created", "flow_id", "created_at"),
    )
    # 64 bits: anonymous answers take random negative ids (see Surveys._save); SQLite's
    # INTEGER PRIMARY KEY is already 64-bit and must stay spelled INTEGER to be the rowid
    id: int | None = Field(
        default=None,
        sa_column=Column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True),
    )
    # no index of its own: uq_answer_conversation_step starts with it
    conversation_id: str | None = Field(default=None, foreign_key="conversation.id", max_length=32)
    response_id: str | None = Field(default=None, max_length=32)
    respondent_id: int | None = Field(default=None, foreign_key="respondent.id", index=True)
    flow_id: str = Field(max_length=64)
    flow_version_id: int = Field(foreign_key="flow_version.id")
    step_id: str = Field(max_length=64)
    step_type: str = Field(max_length=16)
    value: Any = Field(default=None, sa_column=Column(JSON, nullable=True))
    created_at: datetime = _ts()


class PendingAnonymousAnswer(SQLModel, table=True):
    """An answer of a closed anonymous conversation, waiting to join ``answer`` with the
    answers of other responses (see services/anonymous.py): nothing here names a person."""

    __tablename__ = "anonymous_pending"
    id: int | None = Field(default=None, primary_key=True)
    response_id: str = Field(max_length=32)
    flow_id: str = Field(max_length=64, index=True)
    flow_version_id: int = Field(foreign_key="flow_version.id")
    step_id: str = Field(max_length=64)
    step_type: str = Field(max_length=16)
    value: Any = Field(default=None, sa_column=Column(JSON, nullable=True))
    day: datetime = _ts()  # the only time the answer will keep
    queued_at: datetime = _ts()  # for the wait limit; gone with the row


class Tag(SQLModel, table=True):
    """A weighted tag added by an answer; the history of segments is these rows over time."""

    __tablename__ = "tag"
    id: int | None = Field(default=None, primary_key=True)
    respondent_id: int = Field(foreign_key="respondent.id", index=True)
    conversation_id: str | None = Field(default=None, foreign_key="conversation.id", max_length=32)
    dimension: str = Field(max_length=41, index=True)
    segment: str = Field(max_length=61)
    weight: float = Field(default=1.0)
    source: str = Field(max_length=130)
    created_at: datetime = _ts()


class Event(SQLModel, table=True):
    """Append-only log of what has no row of its own: opt-outs, undeliverable Slack messages
    (a conversation's start and end are on its row)."""

    __tablename__ = "event"
    id: int | None = Field(default=None, primary_key=True)
    respondent_id: int | None = Field(default=None, foreign_key="respondent.id", index=True)
    kind: str = Field(max_length=64, index=True)
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = _ts()


# The Slack channel's tables live in their own module; import it here so that anything that
# loads the models (Alembic, schema comparisons) sees the whole schema.
from bot.store import slack as _slack_tables  # noqa: E402, F401
