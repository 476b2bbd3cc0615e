"""Where the engine meets the store: load state → advance → save answer, tags and state
in ONE transaction, guarded by a version check, so a crash or a retry never half-records.

Channels (CLI, web, Slack) call only this module; it knows nothing about any of them beyond
the channel name it stores.
"""

from __future__ import annotations

import dataclasses
import functools
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from bot.engine import (
    Answer,
    ConversationState,
    End,
    Outcome,
    Output,
    Start,
    Stop,
    Timeout,
    accept,
    advance,
    lead_in,
    new_state,
    resume,
)
from bot.engine.answers import Rejected
from bot.errors import (
    Busy,
    ConversationClosed,
    ConversationNotFound,
    InvalidAnswer,
    NotCurrentStep,
    NotYourConversation,
    OptedOut,
    ParleyError,
    RecentlySurveyed,
)
from bot.flow import Flow
from bot.services import anonymous as anonymous_answers
from bot.services.catalog import FlowCatalog
from bot.services.recent import RecentConversations, Saved
from bot.store import repo
from bot.store import statements as sql
from bot.store.database import Database
from bot.store.models import as_utc, utcnow

MAX_RETRIES = 5
T = TypeVar("T")


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
    from_start: bool = False  # the outputs are the survey's first words (Surveys.show)
    replaced_expired: bool = False  # started anew: the open one had expired (Surveys.start)

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


class Surveys:
    """The conversation service: start, answer, stop, show, opt out.

    Every method is one transaction body of Core statements run by ``Database.run`` (or
    ``Database.read``): load, advance the pure engine, save — one thread hop on SQLite.
    """

    def __init__(
        self,
        db: Database,
        catalog: FlowCatalog,
        *,
        clock: Callable[[], datetime] = utcnow,
        recontact: timedelta | None = None,
    ) -> None:
        self.db = db
        self.catalog = catalog
        self.clock = clock
        self.recontact = recontact  # the frequency cap (None: none, e.g. `parley chat`)
        self.recent = RecentConversations()

    # --- starting and resuming -----------------------------------------------------------

    async def start(
        self,
        *,
        flow_id: str,
        respondent_key: str,
        channel: str,
        attributes: dict[str, Any] | None = None,
        timezone: str | None = None,
        minted: bool = False,
        within: Callable[[Connection, Reply], None] | None = None,
    ) -> Reply:
        """Start ``flow_id`` for a respondent, or resume the conversation they have open.

        ``minted``: the channel made ``respondent_key`` for this request from a random token
        (a first visit), so there is nobody to look up: no stored person, no open
        conversation, no opt-out. ``within``: as for ``answer``, run in the same transaction
        once the reply is known (Slack claims the first question with the conversation)."""
        self.catalog.refresh()
        flow = self.catalog.get(flow_id)
        saved: list[Saved] = []
        body = functools.partial(
            self._start,
            flow,
            respondent_key,
            channel[:32],
            attributes or {},
            timezone,
            minted,
            saved,
        )
        if within is not None:
            body = functools.partial(self._then, body, within)
        for _ in range(MAX_RETRIES):
            try:
                reply = await self.db.run(body)
            except (IntegrityError, _Conflict):
                # a parallel request opened it first: go round and resume that one; and a
                # flow version stored in the transaction that rolled back is stored no more
                self.catalog.forget_version(flow)
                continue
            except Exception:  # the transaction rolled back: what it stored is not stored
                self.catalog.forget_version(flow)
                raise
            self._remember(saved)
            return reply
        raise Busy("could not start the conversation just now; please try again")

    @staticmethod
    def _then(
        body: Callable[[Connection], Reply],
        within: Callable[[Connection, Reply], None],
        conn: Connection,
    ) -> Reply:
        reply = body(conn)
        within(conn, reply)
        return reply

    def _start(
        self,
        flow: Flow,
        key: str,
        channel: str,
        attributes: dict[str, Any],
        timezone: str | None,
        minted: bool,
        saved: list[Saved],
        conn: Connection,
    ) -> Reply:
        saved.clear()  # a retry starts afresh
        now = self.clock()
        if minted:
            respondent = sql.add_respondent(
                conn, key=key, attributes=attributes, timezone=timezone, now=now, minted=True
            )
            existing = None
        else:
            respondent = self._respondent(conn, key, attributes, timezone, now)
            if respondent.opted_out:
                raise OptedOut("this person opted out of surveys and will not be asked again")
            existing = sql.open_conversation(conn, open_key=repo.open_key(respondent.id, flow.id))
        if existing is not None:
            old_flow = self.catalog.flow_for_version(conn, existing.flow_version_id)
            state = self._state(existing)
            if not self._expired(old_flow, existing, now):
                return self._reply(existing, resume(old_flow, state), state, key)
            self._save(
                conn, existing, old_flow, advance(old_flow, state, Timeout()), respondent, now
            )
        replaced_expired = existing is not None
        if not minted:
            self._mark_surveyed(conn, respondent, now)
        version_id = self.catalog.version_id(conn, flow, now)
        fresh = new_state(flow, respondent.attributes)
        if flow.anonymous:
            fresh.response = uuid.uuid4().hex
        outcome = advance(flow, fresh, Start())
        state = outcome.state
        if flow.anonymous and not state.is_open:
            state.forget_answers()
        conversation = sql.ConversationRow(
            id=repo.new_conversation_id(),
            respondent_id=respondent.id,
            flow_id=flow.id,
            flow_version_id=version_id,
            status=state.status,
            state=state.to_json(),
            version=0,
            open_key=repo.open_key(respondent.id, flow.id) if state.is_open else None,
            started_at=now,
        )
        sql.insert_conversation(
            conn,
            **vars(conversation),
            channel=channel,
            current_step=state.current,
            updated_at=now,
            completed_at=None if state.is_open else now,
        )
        if state.is_open:
            saved.append(Saved(conversation, respondent, flow, state))
        return Reply(
            conversation.id,
            flow.id,
            list(outcome.outputs),
            state.status,
            state.current,
            key,
            created=True,
            replaced_expired=replaced_expired,
        )

    def _mark_surveyed(
        self, conn: Connection, respondent: sql.RespondentRow, now: datetime
    ) -> None:
        """The frequency cap: no new conversation for someone asked within the recontact
        window (resuming the open one is always fine: that is the same survey). The check and
        the new ``last_surveyed_at`` are one conditional UPDATE, so parallel starts of
        different flows cannot all slip through."""
        window = self.recontact
        if sql.mark_surveyed(
            conn, id=respondent.id, now=now, not_since=now - window if window else None
        ):
            # The person's row is this transaction's now (PostgreSQL locked it): an opt-out
            # committed since it was read shows here, and a later one waits for this start
            # to commit, then closes the conversation it opened.
            if sql.is_opted_out(conn, id=respondent.id):
                raise OptedOut("this person opted out of surveys and will not be asked again")
            return
        assert window is not None
        last = respondent.last_surveyed_at
        until = as_utc(last) + window if last is not None else now + window
        if now >= until:
            raise _Conflict  # it looked free when read: a parallel start took it, go round
        raise RecentlySurveyed(
            f"this person was asked to take a survey recently; Parley asks again from "
            f"{until:%Y-%m-%d %H:%M} UTC (PARLEY_RECONTACT_DAYS)",
            until=until,
        )

    def _respondent(
        self,
        conn: Connection,
        key: str,
        attributes: dict[str, Any],
        timezone: str | None,
        now: datetime,
    ) -> sql.RespondentRow:
        respondent = sql.find_respondent(conn, key=key)
        if respondent is None:
            return sql.add_respondent(
                conn, key=key, attributes=attributes, timezone=timezone, now=now
            )
        changes: dict[str, Any] = {}
        merged = {**respondent.attributes, **attributes}
        if merged != respondent.attributes:
            changes["attributes"] = merged
        if timezone and timezone != respondent.timezone:
            changes["timezone"] = timezone
        if changes:  # most returning respondents change nothing: no write
            sql.update_respondent(conn, id=respondent.id, **changes)
            respondent = dataclasses.replace(
                respondent, attributes=merged, timezone=timezone or respondent.timezone
            )
        return respondent

    # --- answering -------------------------------------------------------------------------

    async def answer(
        self,
        *,
        conversation_id: str,
        respondent_key: str,
        step: str,
        value: Any,
        within: Callable[[Connection, Reply], None] | None = None,
    ) -> Reply:
        """Record one answer. A repeat of an answer already recorded is a no-op (duplicate).

        ``within`` runs in the answer's own transaction once the reply is known (not for a
        duplicate): a channel stores what it owes the person (Slack claims the next
        question) together with the answer, so neither exists without the other."""
        saved: list[Saved] = []
        body = functools.partial(
            self._answer, conversation_id, respondent_key, step, value, within, saved
        )
        reply = await self._retrying(
            body,
            lambda: NotCurrentStep("the conversation changed while answering; please reload it"),
        )
        self._remember(saved)
        if reply is None:
            raise ConversationClosed("this survey has expired")
        return reply

    def _answer(
        self,
        conversation_id: str,
        key: str,
        step: str,
        value: Any,
        within: Callable[[Connection, Reply], None] | None,
        saved: list[Saved],
        conn: Connection,
    ) -> Reply | None:
        saved.clear()  # a retry starts afresh
        now = self.clock()
        last = self.recent.take(conversation_id)
        if last is not None:
            reply = self._answer_saved(last, key, step, value, within, saved, conn, now)
            if reply is not None:
                return reply
        conversation, respondent, flow = self._load(conn, conversation_id, key)
        state = self._state(conversation)
        if not flow.has_step(step):
            raise NotCurrentStep(
                f"there is no question '{step}' in this survey; the current question is "
                f"'{state.current}'"
            )
        if step in state.answers and step != state.current:
            if self._same_answer(flow, state, step, value):
                return self._reply(conversation, resume(flow, state), state, key, duplicate=True)
            if state.is_open:
                raise NotCurrentStep(
                    f"step '{step}' was already answered; the current question is '{state.current}'"
                )
        if not state.is_open:
            raise ConversationClosed(f"this conversation is already {state.status}")
        if self._expired(flow, conversation, now):
            self._save(conn, conversation, flow, advance(flow, state, Timeout()), respondent, now)
            return None  # committed; the caller says it expired
        outcome = advance(flow, state, Answer(step, value))
        if outcome.error is not None:
            raise InvalidAnswer(outcome.error, step=step, outputs=outcome.outputs)
        if not self._save(conn, conversation, flow, outcome, respondent, now, saved):
            raise _Conflict
        return self._recorded(conn, conversation, outcome, key, within)

    def _answer_saved(
        self,
        last: Saved,
        key: str,
        step: str,
        value: Any,
        within: Callable[[Connection, Reply], None] | None,
        saved: list[Saved],
        conn: Connection,
        now: datetime,
    ) -> Reply | None:
        """The plain path — the current question answered validly, in time — from what this
        process saved last (see services/recent.py). None, having written nothing: decide
        from the database (anything else, or the row changed since)."""
        conversation, flow, state = last.conversation, last.flow, last.state
        if (
            last.respondent.key != key
            or step != state.current
            or self._expired(flow, conversation, now)
        ):
            return None
        outcome = advance(flow, state, Answer(step, value))
        if outcome.error is not None:
            return None
        if not self._save(conn, conversation, flow, outcome, last.respondent, now, saved):
            return None
        return self._recorded(conn, conversation, outcome, key, within)

    def _recorded(
        self,
        conn: Connection,
        conversation: sql.ConversationRow,
        outcome: Outcome,
        key: str,
        within: Callable[[Connection, Reply], None] | None,
    ) -> Reply:
        reply = self._reply(conversation, outcome.outputs, outcome.state, key, recorded=outcome)
        if within is not None:
            within(conn, reply)
        return reply

    @staticmethod
    def _same_answer(flow: Flow, state: ConversationState, step: str, value: Any) -> bool:
        """Whether a repeat carries the answer already recorded (a double click or a retry)."""
        try:
            return bool(accept(flow, flow.step(step), value, state) == state.answers.get(step))
        except Rejected:
            return False

    async def stop(self, *, conversation_id: str, respondent_key: str) -> Reply:
        def body(conn: Connection) -> Reply:
            conversation, respondent, flow = self._load(conn, conversation_id, respondent_key)
            state = self._state(conversation)
            if not state.is_open:
                return self._reply(conversation, resume(flow, state), state, respondent_key)
            outcome = advance(flow, state, Stop())
            if not self._save(conn, conversation, flow, outcome, respondent, self.clock()):
                raise _Conflict
            return self._reply(conversation, outcome.outputs, outcome.state, respondent_key)

        return await self._retrying(
            body, lambda: Busy("could not stop the survey just now; try again")
        )

    async def show(
        self, *, conversation_id: str, respondent_key: str, with_lead_in: bool = False
    ) -> Reply:
        """The conversation as it stands (to resume after a reload). ``with_lead_in``: the
        open question comes with the words said just before it (the intro, message steps), for
        a question whose delivery failed; ``from_start`` then says it is the first question."""

        def body(conn: Connection) -> Reply:
            conversation, respondent, flow = self._load(
                conn, conversation_id, respondent_key, allow_opted_out=True
            )
            state = self._state(conversation)
            if state.is_open and self._expired(flow, conversation, self.clock()):
                # past its time, though the sweep has not closed it yet: say so now, as an
                # answer would (the sweep or that answer does the writing)
                state = state.copy()
                state.status, state.current = "expired", None
            outputs = resume(flow, state)
            if with_lead_in:
                outputs = [*lead_in(flow, state), *outputs]
            if respondent.opted_out:  # opting out closed it: say why, not just "stopped"
                outputs = [
                    End("opted_out", o.text) if isinstance(o, End) and o.reason == "stopped" else o
                    for o in outputs
                ]
            reply = self._reply(conversation, outputs, state, respondent_key)
            first = with_lead_in and state.is_open and not state.answers
            return dataclasses.replace(reply, from_start=True) if first else reply

        return await self.db.read(body)

    async def expire_due(self, *, batch: int = 500) -> int:
        """Close conversations past their flow's ``expires_after`` (the scheduler calls this).

        Only conversations older than the shortest ``expires_after`` are looked at, in
        batches of one short transaction each, so the sweep never holds the writer for long."""
        lifetimes = [f.expires_after for f in self.catalog.all() if f.expires_after]
        if not lifetimes:
            return 0

        def body(conn: Connection) -> tuple[int, int]:
            now = self.clock()
            rows = sql.open_conversation_rows(
                conn, started_before=now - timedelta(seconds=min(lifetimes)), limit=batch
            )
            closed = 0
            for conversation in rows:
                flow = self.catalog.flow_for_version(conn, conversation.flow_version_id)
                if not self._expired(flow, conversation, now):
                    continue
                loaded = sql.load_conversation(conn, id=conversation.id)
                assert loaded is not None
                state = self._state(conversation)
                if self._save(
                    conn, conversation, flow, advance(flow, state, Timeout()), loaded[1], now
                ):
                    closed += 1
            return closed, len(rows)

        total = 0
        while True:
            closed, seen = await self.db.run(body)
            total += closed
            if seen < batch or closed == 0:
                return total

    # --- opting out -----------------------------------------------------------------------

    async def opt_out(self, *, respondent_key: str, source: str) -> bool:
        """Never survey this person again; closes their open conversations. Idempotent."""

        def body(conn: Connection) -> bool:
            now = self.clock()
            respondent = self._respondent(conn, respondent_key, {}, None, now)
            sql.suppress(conn, key=respondent_key, now=now)
            if respondent.opted_out or not sql.mark_opted_out(conn, id=respondent.id, now=now):
                return False  # already, or a parallel request (a double click) was first
            # each open conversation stops as if the person said "stop" (an anonymous one
            # forgets its answers on closing, as always)
            for conversation in sql.conversations_of(conn, respondent_id=respondent.id):
                if conversation.open_key is None:
                    continue
                flow = self.catalog.flow_for_version(conn, conversation.flow_version_id)
                state = self._state(conversation)
                if not self._save(
                    conn, conversation, flow, advance(flow, state, Stop()), respondent, now
                ):
                    raise _Conflict
            sql.add_event(
                conn,
                kind="respondent.opted_out",
                respondent_id=respondent.id,
                data={"source": source},
                now=now,
            )
            return True

        # IntegrityError: a parallel request stored this (new) person first: use theirs
        return await self._retrying(
            body,
            lambda: Busy("could not opt out just now; please try again"),
            also=(IntegrityError,),
        )

    async def is_opted_out(self, *, respondent_key: str) -> bool:
        def body(conn: Connection) -> bool:
            respondent = sql.find_respondent(conn, key=respondent_key)
            if respondent is not None:
                return respondent.opted_out
            return sql.is_suppressed(conn, key=respondent_key)

        return await self.db.read(body)

    async def open_conversations(self, *, respondent_key: str) -> list[Reply]:
        """The conversations still waiting for this person (open and not past their time)."""

        def body(conn: Connection) -> list[Reply]:
            respondent = sql.find_respondent(conn, key=respondent_key)
            if respondent is None:
                return []
            replies = []
            now = self.clock()
            for conversation in sql.conversations_of(conn, respondent_id=respondent.id):
                if conversation.open_key is None:
                    continue
                flow = self.catalog.flow_for_version(conn, conversation.flow_version_id)
                if self._expired(flow, conversation, now):
                    continue  # past its time, though the sweep has not closed it yet
                state = self._state(conversation)
                replies.append(
                    self._reply(conversation, resume(flow, state), state, respondent_key)
                )
            return replies

        return await self.db.read(body)

    # --- internals ------------------------------------------------------------------------

    async def _retrying(
        self,
        body: Callable[[Connection], T],
        give_up: Callable[[], ParleyError],  # made only when needed: most bodies succeed
        *,
        also: tuple[type[Exception], ...] = (),
    ) -> T:
        """Run a transaction body again when another request moved the same conversation
        (or stored the same new person) first: each try re-reads and decides afresh."""
        for _ in range(MAX_RETRIES):
            try:
                return await self.db.run(body)
            except (_Conflict, *also):
                continue
        raise give_up()

    def _remember(self, saved: list[Saved]) -> None:
        """Keep what a body saved, now that it is committed: a version that rolled back could
        be taken again by another process's write, with other content (see recent.py)."""
        for each in saved:
            self.recent.keep(each)

    def _load(
        self, conn: Connection, conversation_id: str, key: str, *, allow_opted_out: bool = False
    ) -> tuple[sql.ConversationRow, sql.RespondentRow, Flow]:
        loaded = (
            sql.load_conversation(conn, id=conversation_id) if len(conversation_id) <= 32 else None
        )
        if loaded is None:
            raise ConversationNotFound(f"no conversation {conversation_id!r}")
        conversation, respondent = loaded
        if respondent.key != key:
            raise NotYourConversation("this conversation belongs to someone else")
        if respondent.opted_out and not allow_opted_out:
            raise OptedOut("this person opted out of surveys")
        return (
            conversation,
            respondent,
            self.catalog.flow_for_version(conn, conversation.flow_version_id),
        )

    @staticmethod
    def _state(conversation: sql.ConversationRow) -> ConversationState:
        state = ConversationState.from_json(conversation.state)
        if conversation.status != state.status and conversation.open_key is None:
            state.status = conversation.status  # type: ignore[assignment]  # closed from outside (opt-out)
            state.current = None
        return state

    @staticmethod
    def _expired(flow: Flow, conversation: sql.ConversationRow, now: datetime) -> bool:
        lifetime = flow.lifetime
        return lifetime is not None and now - as_utc(conversation.started_at) > lifetime

    def _save(
        self,
        conn: Connection,
        conversation: sql.ConversationRow,
        flow: Flow,
        outcome: Outcome,
        respondent: sql.RespondentRow,
        now: datetime,
        saved: list[Saved] | None = None,
    ) -> bool:
        """Write the new state, the answer, its tags and profile updates; False on a conflict.
        An anonymous conversation writes no answer rows: closing it queues its answers (to
        join others' later) and forgets them, so nothing links them to the person. No event
        either, for a start or an end: the row itself says when and how (``started_at``,
        ``status``, ``completed_at``); events are for what has no row of its own."""
        state = outcome.state
        anonymous = flow.anonymous
        if anonymous and not state.is_open:
            state = state.copy()
            state.forget_answers()
        # Only what changed: SQLite rewrites an index entry whenever its column is SET, and
        # status and open_key change once per conversation, not once per answer.
        values: dict[str, Any] = {
            "state": state.to_json(),
            "current_step": state.current,
            "updated_at": now,
        }
        if state.status != conversation.status:
            values["status"] = state.status
        if not state.is_open:
            values["open_key"] = None
            values["completed_at"] = now
        profile = outcome.profile_updates if not anonymous else {}
        stored = sql.lock_respondent(conn, id=respondent.id) if profile else {}
        if stored is None:
            return False  # forgotten while this waited for the lock: read again (not found)
        if not sql.save_state(
            conn, id=conversation.id, expected_version=conversation.version, values=values
        ):
            return False
        self.recent.drop(conversation.id)
        if saved is not None and state.is_open:  # remembered once committed (_remember)
            row = sql.ConversationRow(
                conversation.id,
                conversation.respondent_id,
                conversation.flow_id,
                conversation.flow_version_id,
                state.status,
                values["state"],
                conversation.version + 1,
                conversation.open_key,
                conversation.started_at,
            )
            saved.append(Saved(row, respondent, flow, state))
        recorded = outcome.recorded
        if anonymous:
            if not state.is_open:  # its answers wait to join others' (services/anonymous.py)
                anonymous_answers.queue(
                    conn, flow, outcome.state, conversation.flow_version_id, now
                )
        elif recorded is not None and recorded.value is not None:
            sql.insert_answer(
                conn,
                conversation_id=conversation.id,
                respondent_id=respondent.id,
                flow_id=flow.id,
                flow_version_id=conversation.flow_version_id,
                step_id=recorded.step,
                step_type=flow.step(recorded.step).type,
                value=recorded.value,
                created_at=now,
            )
            sql.insert_tags(
                conn,
                [
                    {
                        "respondent_id": respondent.id,
                        "conversation_id": conversation.id,
                        "dimension": tag.split(":", 1)[0],
                        "segment": tag.split(":", 1)[1],
                        "weight": weight,
                        "source": f"{flow.id}.{recorded.step}",
                        "created_at": now,
                    }
                    for tag, weight in recorded.tags.items()
                ],
            )
        if profile:
            sql.update_respondent(conn, id=respondent.id, attributes={**stored, **profile})
        return True

    @staticmethod
    def _reply(
        conversation: sql.ConversationRow,
        outputs: list[Output],
        state: ConversationState,
        key: str,
        *,
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
            False,
            duplicate,
            rec,
        )
