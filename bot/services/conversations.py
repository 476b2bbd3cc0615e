"""Where the engine meets the store: load state → advance → save answer, tags and state
in ONE transaction, guarded by a version check, so a crash or a retry never half-records.

Channels (CLI, web, Slack) call only this module; it knows nothing about any of them beyond
the channel name it stores.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from bot.engine import (
    Answer,
    ConversationState,
    Outcome,
    Output,
    Start,
    Stop,
    Timeout,
    advance,
    new_state,
    resume,
)
from bot.engine.answers import Rejected, coerce
from bot.errors import (
    ConversationClosed,
    ConversationNotFound,
    InvalidAnswer,
    NotCurrentStep,
    NotYourConversation,
    OptedOut,
)
from bot.flow import Flow
from bot.services.catalog import FlowCatalog
from bot.store import repo
from bot.store.database import Database
from bot.store.models import Answer as AnswerRow
from bot.store.models import Conversation, Respondent, Tag, utcnow

MAX_RETRIES = 5


class _Conflict(Exception):
    """The version check failed: another request saved this conversation first."""


@dataclass(frozen=True)
class Reply:
    """What a channel shows after an event: outputs plus where the conversation stands."""

    conversation_id: str
    flow_id: str
    outputs: list[Output]
    status: str
    step: str | None
    respondent_key: str
    created: bool = False
    duplicate: bool = False
    recorded: dict[str, Any] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.status not in ("new", "active")

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.conversation_id,
            "flow": self.flow_id,
            "status": self.status,
            "step": self.step,
            "done": self.done,
            "messages": [o.to_dict() for o in self.outputs],
        }


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class Surveys:
    """The conversation service: start, answer, stop, show, opt out."""

    def __init__(
        self, db: Database, catalog: FlowCatalog, *, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.db = db
        self.catalog = catalog
        self.clock = clock

    # --- starting and resuming -----------------------------------------------------------

    async def start(
        self,
        *,
        flow_id: str,
        respondent_key: str,
        channel: str,
        attributes: dict[str, Any] | None = None,
        timezone: str | None = None,
    ) -> Reply:
        """Start ``flow_id`` for a respondent, or resume the conversation they have open."""
        self.catalog.refresh()
        flow = self.catalog.get(flow_id)
        for _ in range(MAX_RETRIES):
            try:
                async with self.db.sessions() as session, session.begin():
                    return await self._start(
                        session, flow, respondent_key, channel, attributes, timezone
                    )
            except IntegrityError:
                continue  # a parallel request opened it first: go round and resume that one
        raise ConversationClosed("could not start the conversation; please try again")

    async def _start(
        self,
        session: AsyncSession,
        flow: Flow,
        key: str,
        channel: str,
        attributes: dict[str, Any] | None,
        timezone: str | None,
    ) -> Reply:
        respondent = await repo.get_or_create_respondent(
            session, key=key, attributes=attributes, timezone=timezone
        )
        if respondent.opted_out:
            raise OptedOut("this person opted out of surveys and will not be asked again")
        assert respondent.id is not None
        existing = await repo.open_conversation(
            session, respondent_id=respondent.id, flow_id=flow.id
        )
        if existing is not None:
            old_flow = await self.catalog.for_version(session, existing.flow_version_id)
            state = self._state(existing)
            if not self._expired(old_flow, existing):
                return self._reply(existing, resume(old_flow, state), state, key)
            await self._save(
                session, existing, old_flow, advance(old_flow, state, Timeout()), respondent
            )
        version_id = await self.catalog.version_id(session, flow)
        state = new_state(flow, respondent.attributes)
        outcome = advance(flow, state, Start())
        now = self.clock()
        conversation = Conversation(
            id=uuid.uuid4().hex,
            respondent_id=respondent.id,
            flow_id=flow.id,
            flow_version_id=version_id,
            channel=channel[:32],
            status=outcome.state.status,
            current_step=outcome.state.current,
            state=outcome.state.to_json(),
            open_key=repo.open_key(respondent.id, flow.id) if outcome.state.is_open else None,
            started_at=now,
            updated_at=now,
            completed_at=None if outcome.state.is_open else now,
        )
        session.add(conversation)
        respondent.last_surveyed_at = now
        session.add(respondent)
        await session.flush()
        await repo.add_event(
            session,
            kind="conversation.started",
            respondent_id=respondent.id,
            data={"flow": flow.id, "conversation": conversation.id, "channel": channel},
        )
        return self._reply(conversation, outcome.outputs, outcome.state, key, created=True)

    # --- answering -------------------------------------------------------------------------

    async def answer(
        self, *, conversation_id: str, respondent_key: str, step: str, value: Any
    ) -> Reply:
        """Record one answer. A repeat of an answer already recorded is a no-op (duplicate)."""
        for _ in range(MAX_RETRIES):
            expired = False
            try:
                async with self.db.sessions() as session, session.begin():
                    conversation, respondent, flow = await self._load(
                        session, conversation_id, respondent_key
                    )
                    state = self._state(conversation)
                    if step in state.answers and step != state.current:
                        if self._same_answer(flow, state, step, value):
                            return self._reply(
                                conversation,
                                resume(flow, state),
                                state,
                                respondent_key,
                                duplicate=True,
                            )
                        if state.is_open:
                            raise NotCurrentStep(
                                f"step '{step}' was already answered; the current question is '{state.current}'"
                            )
                    if not state.is_open:
                        raise ConversationClosed(f"this conversation is already {state.status}")
                    if self._expired(flow, conversation):
                        expired = await self._save(
                            session, conversation, flow, advance(flow, state, Timeout()), respondent
                        )
                    else:
                        outcome = advance(flow, state, Answer(step, value))
                        if outcome.error is not None:
                            raise InvalidAnswer(outcome.error, step=step, outputs=outcome.outputs)
                        if not await self._save(session, conversation, flow, outcome, respondent):
                            raise _Conflict
                        return self._reply(
                            conversation,
                            outcome.outputs,
                            outcome.state,
                            respondent_key,
                            recorded=outcome,
                        )
            except _Conflict:
                continue  # someone else moved this conversation on: re-read and decide again
            if expired:
                raise ConversationClosed("this survey has expired")
        raise NotCurrentStep("the conversation changed while answering; please reload it")

    @staticmethod
    def _same_answer(flow: Flow, state: ConversationState, step: str, value: Any) -> bool:
        """Whether a repeat carries the answer already recorded (a double click or a retry)."""
        try:
            return bool(coerce(flow.step(step), value) == state.answers.get(step))
        except Rejected:
            return False

    async def stop(self, *, conversation_id: str, respondent_key: str) -> Reply:
        async with self.db.sessions() as session, session.begin():
            conversation, respondent, flow = await self._load(
                session, conversation_id, respondent_key
            )
            state = self._state(conversation)
            if not state.is_open:
                return self._reply(conversation, resume(flow, state), state, respondent_key)
            outcome = advance(flow, state, Stop())
            await self._save(session, conversation, flow, outcome, respondent)
            return self._reply(conversation, outcome.outputs, outcome.state, respondent_key)

    async def show(self, *, conversation_id: str, respondent_key: str) -> Reply:
        """The conversation as it stands (to resume after a reload)."""
        async with self.db.reads() as session:
            conversation, _respondent, flow = await self._load(
                session, conversation_id, respondent_key, allow_opted_out=True
            )
            state = self._state(conversation)
            return self._reply(conversation, resume(flow, state), state, respondent_key)

    async def expire_due(self) -> int:
        """Close conversations past their flow's ``expires_after`` (the scheduler calls this)."""
        from sqlalchemy import select

        closed = 0
        async with self.db.sessions() as session, session.begin():
            rows = (
                (
                    await session.execute(
                        select(Conversation).where(Conversation.open_key.is_not(None))
                    )
                )
                .scalars()
                .all()
            )
            for conversation in rows:
                flow = await self.catalog.for_version(session, conversation.flow_version_id)
                if self._expired(flow, conversation):
                    respondent = await session.get(Respondent, conversation.respondent_id)
                    assert respondent is not None
                    state = self._state(conversation)
                    if await self._save(
                        session, conversation, flow, advance(flow, state, Timeout()), respondent
                    ):
                        closed += 1
        return closed

    # --- opting out -----------------------------------------------------------------------

    async def opt_out(self, *, respondent_key: str, source: str) -> bool:
        """Never survey this person again; closes their open conversations. Idempotent."""
        async with self.db.sessions() as session, session.begin():
            respondent = await repo.get_or_create_respondent(session, key=respondent_key)
            changed = await repo.set_opted_out(session, respondent=respondent)
            await repo.suppress(session, key=respondent_key)
            if changed:
                await repo.add_event(
                    session,
                    kind="respondent.opted_out",
                    respondent_id=respondent.id,
                    data={"source": source},
                )
            return changed

    async def is_opted_out(self, *, respondent_key: str) -> bool:
        async with self.db.reads() as session:
            respondent = await repo.get_respondent(session, key=respondent_key)
            if respondent is not None:
                return respondent.opted_out
            return await repo.is_suppressed(session, key=respondent_key)

    async def open_conversations(self, *, respondent_key: str) -> list[Reply]:
        async with self.db.reads() as session:
            respondent = await repo.get_respondent(session, key=respondent_key)
            if respondent is None or respondent.id is None:
                return []
            replies = []
            for conversation in await repo.conversations_of(session, respondent_id=respondent.id):
                if conversation.open_key is None:
                    continue
                flow = await self.catalog.for_version(session, conversation.flow_version_id)
                state = self._state(conversation)
                replies.append(
                    self._reply(conversation, resume(flow, state), state, respondent_key)
                )
            return replies

    # --- internals ------------------------------------------------------------------------

    async def _load(
        self,
        session: AsyncSession,
        conversation_id: str,
        key: str,
        *,
        allow_opted_out: bool = False,
    ) -> tuple[Conversation, Respondent, Flow]:
        conversation = (
            await repo.get_conversation(session, id=conversation_id)
            if len(conversation_id) <= 32
            else None
        )
        if conversation is None:
            raise ConversationNotFound(f"no conversation {conversation_id!r}")
        respondent = await session.get(Respondent, conversation.respondent_id)
        if respondent is None or respondent.key != key:
            raise NotYourConversation("this conversation belongs to someone else")
        if respondent.opted_out and not allow_opted_out:
            raise OptedOut("this person opted out of surveys")
        flow = await self.catalog.for_version(session, conversation.flow_version_id)
        return conversation, respondent, flow

    @staticmethod
    def _state(conversation: Conversation) -> ConversationState:
        state = ConversationState.from_json(conversation.state)
        if conversation.status != state.status and conversation.open_key is None:
            state.status = conversation.status  # type: ignore[assignment]  # closed from outside (opt-out)
            state.current = None
        return state

    def _expired(self, flow: Flow, conversation: Conversation) -> bool:
        if flow.expires_after is None:
            return False
        return self.clock() - _aware(conversation.started_at) > timedelta(
            seconds=flow.expires_after
        )

    async def _save(
        self,
        session: AsyncSession,
        conversation: Conversation,
        flow: Flow,
        outcome: Outcome,
        respondent: Respondent,
    ) -> bool:
        state = outcome.state
        now = self.clock()
        saved = await repo.save_state(
            session,
            conversation_id=conversation.id,
            expected_version=conversation.version,
            values={
                "state": state.to_json(),
                "status": state.status,
                "current_step": state.current,
                "open_key": conversation.open_key if state.is_open else None,
                "completed_at": None if state.is_open else now,
            },
        )
        if not saved:
            return False
        recorded = outcome.recorded
        anonymous = flow.anonymous
        if recorded is not None and recorded.value is not None:
            step = flow.step(recorded.step)
            session.add(
                AnswerRow(
                    conversation_id=conversation.id,
                    respondent_id=None if anonymous else respondent.id,
                    flow_id=flow.id,
                    flow_version_id=conversation.flow_version_id,
                    step_id=recorded.step,
                    step_type=step.type,
                    value=recorded.value,
                    created_at=now,
                )
            )
            if not anonymous:
                for tag, weight in recorded.tags.items():
                    dimension, segment = tag.split(":", 1)
                    session.add(
                        Tag(
                            respondent_id=respondent.id,
                            conversation_id=conversation.id,
                            dimension=dimension,
                            segment=segment,
                            weight=weight,
                            source=f"{flow.id}.{recorded.step}",
                            created_at=now,
                        )
                    )
        if outcome.profile_updates and not anonymous:
            respondent.attributes = {**respondent.attributes, **outcome.profile_updates}
            session.add(respondent)
        if not state.is_open:
            await repo.add_event(
                session,
                kind=f"conversation.{state.status}",
                respondent_id=respondent.id,
                data={"flow": flow.id, "conversation": conversation.id},
            )
        await session.flush()
        # Mirror the UPDATE onto the loaded object without marking it dirty (no second write).
        for name, value in (
            ("version", conversation.version + 1),
            ("status", state.status),
            ("current_step", state.current),
            ("state", state.to_json()),
            ("open_key", conversation.open_key if state.is_open else None),
        ):
            set_committed_value(conversation, name, value)
        return True

    @staticmethod
    def _reply(
        conversation: Conversation,
        outputs: list[Output],
        state: ConversationState,
        key: str,
        *,
        created: bool = False,
        duplicate: bool = False,
        recorded: Outcome | None = None,
    ) -> Reply:
        rec: dict[str, Any] = {}
        if recorded is not None and recorded.recorded is not None:
            rec = {
                "step": recorded.recorded.step,
                "value": recorded.recorded.value,
                "tags": recorded.recorded.tags,
            }
        return Reply(
            conversation.id,
            conversation.flow_id,
            list(outputs),
            state.status,
            state.current,
            key,
            created,
            duplicate,
            rec,
        )
