"""Respondents in Slack: a survey is a DM conversation.

Clicks (block_actions), typed replies (message.im), form modals (view_submission), the App
Home and new members (team_join) become calls to :class:`~bot.services.conversations.Surveys`;
its replies go back through :class:`~bot.channels.slack.delivery.Delivery`. Every listener
acks first and works after, so Slack always gets its answer within 3 seconds.
"""

from __future__ import annotations

import contextlib
import logging
import re
from functools import partial
from typing import TYPE_CHECKING, Any

from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy import Connection

from bot.channels.slack import blocks, home
from bot.channels.slack.dedupe import delivery_key
from bot.channels.slack.delivery import Outgoing, Undeliverable, claim_reply, is_stale
from bot.channels.slack.people import respondent_key
from bot.channels.slack.typed import DirectMessage, written_before
from bot.engine.answers import fold
from bot.engine.messages import Ask
from bot.errors import Busy, ConversationError, FlowNotFound, InvalidAnswer, OptedOut, ParleyError
from bot.flow import Flow
from bot.services.conversations import Reply
from bot.store import slack as store

if TYPE_CHECKING:
    from bot.channels.slack.app import SlackRuntime

log = logging.getLogger("parley.slack")

OPT_OUT_WORDS = frozenset({"stop", "unsubscribe", "opt out", "opt-out", "optout"})
GREETINGS = frozenset({"hi", "hello", "hey", "hej", "hallo", "survey", "start", "help"})
CHANNEL = "slack"

OPTED_OUT_TEXT = "Done — you won't get any more surveys from me. Thanks for your time."
ALREADY_OPTED_OUT_TEXT = "You're already opted out — I won't send you surveys."
OPTED_OUT_NOTE = "You opted out: nothing to answer here."
NOTHING_OPEN_TEXT = "Nothing to answer right now — I'll message you when there's a survey. Reply *stop* to never get surveys."
STALE_TEXT = "That question was already answered or the survey is closed, so nothing changed."
NOT_AN_ANSWER_TEXT = (
    "I have not taken that message as your answer to my last question ({why}). "
    "Please answer the question itself."
)
FILES_TEXT = "I can only read text, not files — please type your answer."
EMAIL_BY_FORM_TEXT = "To share your email, please use the *Share my email* button above (it asks for your consent too)."


def current_ask(reply: Reply) -> Ask | None:
    return next((o for o in reversed(reply.outputs) if isinstance(o, Ask)), None)


def _asked(open_replies: list[Reply]) -> list[str] | None:
    """[conversation, step] of the question a DM now answers (the newest open one)."""
    if not open_replies:
        return None
    ask = current_ask(open_replies[-1])
    return [open_replies[-1].conversation_id, ask.step] if ask is not None else None


def _labels(ask: Ask | None) -> dict[str, str]:
    if ask is None or not ask.input.choices:
        return {}
    return {c.value: c.label for c in ask.input.choices}


def _actor(body: dict[str, Any], context: Any) -> tuple[str, str]:
    """Who clicked: the Slack user id and their respondent key in this workspace."""
    user = str((body.get("user") or {}).get("id", ""))
    return user, respondent_key(context.team_id, user)


def _channel_and_ts(body: dict[str, Any]) -> tuple[str, str]:
    container = body.get("container") or {}
    channel = container.get("channel_id") or (body.get("channel") or {}).get("id") or ""
    ts = container.get("message_ts") or (body.get("message") or {}).get("ts") or ""
    return str(channel), str(ts)


def _question_mrkdwn(body: dict[str, Any]) -> str:
    """The (already escaped) question text of the clicked message."""
    for block in (body.get("message") or {}).get("blocks") or []:
        if block.get("type") == "section":
            return str((block.get("text") or {}).get("text", ""))[: blocks.MAX_SECTION_TEXT]
    return ""


def _remember_dm_and_count(conn: Connection, *, key: str, channel: str) -> int:
    """Remember the person's DM channel and count their conversations (0 = first contact).

    One transaction where there used to be two in a row (``Delivery.remember_dm``, then
    ``first_contact``): the upsert is idempotent and the count only reads, so nothing about
    exactly-once changes; the count simply sees the state as of the upsert.
    """
    if channel:
        store.set_dm(conn, respondent_key=key, channel=channel)
    return store.conversation_count(conn, respondent_key=key)


def _step_of(action_id: str) -> str:
    """The step of ``parley:<verb>:<step>`` or ``parley:<verb>:<step>:<n>``."""
    parts = action_id.split(":")
    return parts[2][:64] if len(parts) >= 3 else ""


class Respondents:
    """The listeners; one instance per running app (holds no per-person state)."""

    def __init__(self, runtime: SlackRuntime) -> None:
        self.rt = runtime

    # --- flows --------------------------------------------------------------------------------

    def welcome_flow(self) -> Flow | None:
        """The flow for first contact: ``trigger: {first_contact: true}``, ``welcome`` preferred."""
        catalog = self.rt.catalog
        catalog.refresh()
        flows = [f for f in catalog.all() if f.trigger.first_contact]
        for flow in flows:
            if flow.id == "welcome":
                return flow
        if flows:
            return flows[0]
        try:
            return catalog.get(self.rt.settings.demo_flow)
        except FlowNotFound:
            return None

    async def first_contact(self, key: str) -> bool:
        return await self.rt.db.read(partial(store.conversation_count, respondent_key=key)) == 0

    async def start_flow(
        self,
        client: AsyncWebClient,
        *,
        flow: Flow,
        team_id: str | None,
        user_id: str,
        channel: str | None = None,
        repost: bool | None = None,
    ) -> Reply | None:
        """Start (or resume) a flow in the person's DM, with their name and time zone.
        A resumed conversation's question is posted again unless ``repost`` is False.

        The first question is claimed in the transaction that starts the conversation: if
        Slack fails (or the process dies) before it is posted, the recovery sweep posts it —
        a first contact is never left with a conversation nobody was asked."""
        key = respondent_key(team_id, user_id)
        attributes, timezone = await self.rt.profiles.get(client, user_id, team_id=team_id)
        claimed: list[Outgoing] = []

        def within(conn: Connection, reply: Reply) -> None:
            again = not reply.created if repost is None else repost
            claimed[:] = claim_reply(
                conn, reply, team_id=team_id, offer_opt_out=reply.created, repost=again
            )

        try:
            reply = await self.rt.surveys.start(
                flow_id=flow.id,
                respondent_key=key,
                channel=CHANNEL,
                attributes=attributes,
                timezone=timezone,
                within=within,
            )
        except OptedOut:
            return None
        try:
            channel = channel or await self.rt.delivery.dm_channel(client, key=key, user_id=user_id)
        except Undeliverable:  # never will (user_not_found …): no claim left for the sweep
            await self.rt.delivery.release(reply.conversation_id, claimed)
            raise
        await self.rt.delivery.send_reply(
            client, reply, channel=channel, team_id=team_id, claimed=claimed
        )
        return reply

    async def opt_out(
        self,
        client: AsyncWebClient,
        *,
        key: str,
        source: str,
        channel: str | None = None,
        user_id: str = "",
        quiet: bool = False,
    ) -> None:
        """Opt out for good, confirmed in one message. ``quiet``: say nothing when the person
        had already opted out (a double click must not confirm twice). The opt-out is stored
        before anything is asked of Slack: without ``channel``, the DM to confirm in is looked
        up after (``user_id``), and Slack failing then loses a confirmation, not the opt-out."""
        waiting = {(r.conversation_id, r.step) for r in await self._open_asks(key)}
        changed = await self.rt.surveys.opt_out(respondent_key=key, source=source)
        if changed:  # the questions waiting for an answer stop showing buttons (only those:
            # an answered one keeps showing its answer)
            for copy in await self.rt.db.read(partial(store.shown_messages, respondent_key=key)):
                if (copy.conversation_id, copy.step) in waiting:
                    await self.rt.delivery.retire(client, copy, note=OPTED_OUT_NOTE)
        if not changed and quiet:
            return
        text = OPTED_OUT_TEXT if changed else ALREADY_OPTED_OUT_TEXT
        if channel is None:
            channel = await self.rt.delivery.dm_channel(client, key=key, user_id=user_id)
        await self.rt.delivery.post(
            client, key=key, channel=channel, message=blocks.text_message(text)
        )

    # --- typed replies in the DM --------------------------------------------------------------

    async def on_message(
        self, body: dict[str, Any], event: dict[str, Any], client: AsyncWebClient, context: Any
    ) -> None:
        if (
            event.get("channel_type") != "im"
            # edits, deletions, joins, bots' posts… are no replies
            or event.get("subtype") not in (None, "file_share", "thread_broadcast")
            or event.get("bot_id")
            or not event.get("user")
        ):
            return
        team_id = context.team_id or body.get("team_id")
        key = delivery_key(body)
        dm = DirectMessage.from_event(event, team_id)
        who = respondent_key(team_id, dm.user)
        open_now = await self._open_asks(who)
        if key is None:
            await self.handle_dm(client, dm, open_now=open_now)
            return
        # What the text was written to (the question open now), so that the recovery sweep,
        # if it must handle it later, never takes it as the answer to another question.
        stored = {**dm.stored(), "asked": _asked(open_now)}
        if not await self.rt.inbox.claim(key, team_id=team_id, payload=stored, respondent_key=who):
            return  # a retried event, or another replica has it
        try:
            await self.handle_dm(client, dm, inbox_key=key, open_now=open_now)
        except Busy:
            raise  # it will pass: left pending for the recovery sweep
        except (ParleyError, Undeliverable):
            await self.rt.inbox.finish(key)  # it will never work: not worth another try
            raise
        # Any other failure (Slack down past its retries, the database) leaves the delivery
        # pending for the recovery sweep. An answer that was recorded finished it in its own
        # transaction, so the sweep never takes the same text for the next question's answer.
        await self.rt.inbox.finish(key)

    async def handle_dm(
        self,
        client: AsyncWebClient,
        dm: DirectMessage,
        *,
        inbox_key: str | None = None,
        open_now: list[Reply] | None = None,
        late: bool = False,
        asked: list[str] | None = None,
    ) -> None:
        """A DM: opt-out words, a greeting, an answer to the open question, or a first contact.

        ``late``: the recovery sweep handles it after a failure; ``asked`` is the question
        that was open when it arrived. If the conversation has moved on since, the text
        answers nothing now (questions left unposted are posted by the sweep itself)."""
        team_id, user, channel, text = dm.team_id, dm.user, dm.channel, dm.text
        key = respondent_key(team_id, user)
        folded = fold(text, trailing=".!?")  # "stop?", "hi?" too
        if folded in OPT_OUT_WORDS:
            await self.opt_out(client, key=key, channel=channel, source="slack:dm")
            return
        if await self.rt.surveys.is_opted_out(respondent_key=key):
            return
        open_replies = open_now if open_now is not None else await self._open_asks(key)
        if late and _asked(open_replies) != asked:
            return
        if open_replies and not text.strip():  # a file alone (words come with it as text)
            await self._say(client, key, channel, FILES_TEXT)
            return
        if open_replies:
            reply = open_replies[-1]
            ask = current_ask(reply)
            assert ask is not None
            if folded in GREETINGS:  # back to resume, not an answer (not even to a text question)
                await self._ask_again(client, reply, channel=channel, team_id=team_id)
                return
            if ask.input.kind == "email":
                await self._say(client, key, channel, EMAIL_BY_FORM_TEXT)
                return
            why_not = await self._not_written_to(reply, dm)
            if why_not:
                await self._say(client, key, channel, NOT_AN_ANSWER_TEXT.format(why=why_not))
                return
            await self._answer_typed(
                client,
                reply,
                ask,
                key=key,
                team_id=team_id,
                channel=channel,
                text=text,
                inbox_key=inbox_key,
            )
            return
        had = await self.rt.db.run(partial(_remember_dm_and_count, key=key, channel=channel))
        flow = self.welcome_flow()
        if flow is not None and had == 0:
            await self.start_flow(client, flow=flow, team_id=team_id, user_id=user, channel=channel)
        else:
            await self._say(client, key, channel, NOTHING_OPEN_TEXT)

    async def _ask_again(
        self, client: AsyncWebClient, reply: Reply, *, channel: str, team_id: str | None
    ) -> None:
        """The person asked to see the waiting question again. If Slack never showed it (its
        first delivery failed and the sweep has not come by yet), it goes out as the sweep
        would send it: with the words leading into it (a survey's intro and its opt-out
        button), unless Slack shows those already."""
        delivery = self.rt.delivery
        step = reply.step or ""
        row = await self.rt.db.read(
            partial(store.get_message, conversation_id=reply.conversation_id, step=step)
        )
        if row is not None and row.ts is None:
            if not is_stale(row.claimed_at):
                return  # on its way right now (its first delivery, or the sweep's)
            whole = await self.rt.surveys.show(
                conversation_id=reply.conversation_id,
                respondent_key=reply.respondent_key,
                with_lead_in=True,
            )
            first_words, ts, said = await delivery.unshown_lead_in(client, whole, channel=channel)
            if ts is None:
                # not repost: retaking the stale claim is what decides who posts (a second
                # "hello" meanwhile finds it taken and posts nothing)
                await delivery.send_reply(
                    client,
                    whole,
                    channel=channel,
                    team_id=team_id,
                    offer_opt_out=first_words,
                    said=said,
                )
                return
            await delivery.record_posted(reply.conversation_id, step, channel, ts)
        await delivery.send_reply(client, reply, channel=channel, team_id=team_id, repost=True)

    async def _not_written_to(self, reply: Reply, dm: DirectMessage) -> str:
        """Why a DM was not written to the question open now ("" when it was): it was sent
        before Slack showed that question (a second message about the last one), or in the
        thread of an earlier question. Taking it as the answer would misfile what was meant.
        (A question asked again counts from its newest copy; any copy's thread is its own.)"""
        if dm.ts is None and dm.thread_ts is None:
            return ""
        rows = await self.rt.db.read(
            partial(store.shown_messages, respondent_key=reply.respondent_key)
        )
        here = (reply.conversation_id, reply.step)
        if dm.thread_ts is not None and any(
            row.ts == dm.thread_ts and (row.conversation_id, row.step) != here for row in rows
        ):
            return "it was written in the thread of an earlier question"
        shown = next((row.ts for row in rows if (row.conversation_id, row.step) == here), None)
        if dm.thread_ts is None and written_before(dm.ts, shown):
            return "it was sent before I asked it"
        return ""

    async def _open_asks(self, key: str) -> list[Reply]:
        """This person's open conversations that wait for an answer."""
        replies = await self.rt.surveys.open_conversations(respondent_key=key)
        return [r for r in replies if current_ask(r)]

    async def _answer_typed(
        self,
        client: AsyncWebClient,
        reply: Reply,
        ask: Ask,
        *,
        key: str,
        team_id: str | None,
        channel: str,
        text: str,
        inbox_key: str | None,
    ) -> None:
        try:
            answered, claimed, live = await self._record(
                conversation_id=reply.conversation_id,
                key=key,
                step=ask.step,
                value=text,
                team_id=team_id,
                inbox_key=inbox_key,
            )
        except InvalidAnswer as err:
            await self._say(client, key, channel, err.message)
            return
        except ConversationError:  # answered meanwhile (another DM, a click), or closed
            await self._say(client, key, channel, STALE_TEXT)
            return
        except OptedOut:
            return
        if answered.duplicate:
            return
        await self._after_answer(
            client,
            answered,
            key=key,
            team_id=team_id,
            channel=channel,
            shown=blocks.display_answer(answered.recorded.get("value"), _labels(ask)),
            claimed=claimed,
            live=live,
        )

    async def _record(
        self,
        *,
        conversation_id: str,
        key: str,
        step: str,
        value: Any,
        team_id: str | None,
        inbox_key: str | None = None,
    ) -> tuple[Reply, list[Outgoing], store.MessageRow | None]:
        """Store the answer and claim the next question in one transaction: after a crash,
        the recovery sweep finds the claim and posts the question, so neither is lost. A typed
        reply's delivery is finished in it too: once answered, it is never handled again.
        Also returned: the message that asks the answered question now (the latest copy)."""
        claimed: list[Outgoing] = []
        live: list[store.MessageRow | None] = [None]

        def within(conn: Connection, reply: Reply) -> None:
            claimed[:] = claim_reply(conn, reply, team_id=team_id)
            live[0] = store.get_message(conn, conversation_id=conversation_id, step=step)
            if reply.done:
                store.drop_messages(conn, conversation_id=conversation_id)
            if inbox_key is not None:
                store.finish_delivery(conn, key=inbox_key)

        reply = await self.rt.surveys.answer(
            conversation_id=conversation_id,
            respondent_key=key,
            step=step,
            value=value,
            within=within,
        )
        return reply, claimed, live[0]

    async def _after_answer(
        self,
        client: AsyncWebClient,
        reply: Reply,
        *,
        key: str,
        team_id: str | None,
        channel: str,
        shown: str,
        clicked: tuple[str, str, str] | None = None,
        claimed: list[Outgoing] | None = None,
        live: store.MessageRow | None = None,
    ) -> None:
        """The next question first (what the person waits for), then the old one updated:
        the message clicked and the latest copy of the question (asked again after a "hi"),
        so no copy keeps live buttons — also when posting the next question failed (the
        recovery sweep posts it later, and nothing would update the old one then)."""
        answered = [clicked] if clicked is not None else []
        if live and live.channel and live.ts and (clicked is None or live.ts != clicked[1]):
            answered.append((live.channel, live.ts, blocks.escape(live.question)))
        try:
            await self.rt.delivery.send_reply(
                client, reply, channel=channel, team_id=team_id, claimed=claimed
            )
        except Exception:
            with contextlib.suppress(Exception):  # the post's failure is the one to report
                await self._close_answered(client, answered, key=key, shown=shown)
            raise
        await self._close_answered(client, answered, key=key, shown=shown)

    async def _close_answered(
        self, client: AsyncWebClient, copies: list[tuple[str, str, str]], *, key: str, shown: str
    ) -> None:
        for channel, ts, question in copies:
            await self.rt.delivery.mark_answered(
                client, key=key, channel=channel, ts=ts, question_mrkdwn=question, shown=shown
            )

    async def _say(self, client: AsyncWebClient, key: str, channel: str, text: str) -> None:
        await self.rt.delivery.post(
            client, key=key, channel=channel, message=blocks.text_message(text)
        )

    # --- clicks -------------------------------------------------------------------------------

    async def on_answer(
        self,
        ack: Any,
        body: dict[str, Any],
        action: dict[str, Any],
        client: AsyncWebClient,
        context: Any,
    ) -> None:
        await ack()
        step = _step_of(str(action.get("action_id", "")))
        selected = action.get("selected_option") or {}
        raw = action.get("value") or selected.get("value")
        try:
            conversation_id, value = blocks.decode(raw)
        except ValueError:
            return
        if value is None:
            shown = "skipped"
        else:
            shown = str(((selected.get("text") or action.get("text") or {}).get("text")) or value)
        await self._answer_click(client, body, context, conversation_id, step, value, shown)

    async def on_submit(
        self,
        ack: Any,
        body: dict[str, Any],
        action: dict[str, Any],
        client: AsyncWebClient,
        context: Any,
    ) -> None:
        await ack()
        step = _step_of(str(action.get("action_id", "")))
        try:
            conversation_id, _ = blocks.decode(action.get("value"))
        except ValueError:
            return
        state = ((body.get("state") or {}).get("values") or {}).get(
            blocks.block_id(conversation_id, step, "p")
        ) or {}
        picked = (state.get(blocks.action_id(blocks.PICK, step)) or {}).get(
            "selected_options"
        ) or []
        values = [str(o.get("value", ""))[:64] for o in picked[: blocks.MAX_SELECT_OPTIONS]]
        shown = (
            ", ".join(
                str((o.get("text") or {}).get("text", ""))
                for o in picked[: blocks.MAX_SELECT_OPTIONS]
            )
            or "none"
        )
        await self._answer_click(client, body, context, conversation_id, step, values, shown)

    async def _answer_click(
        self,
        client: AsyncWebClient,
        body: dict[str, Any],
        context: Any,
        conversation_id: str,
        step: str,
        value: Any,
        shown: str,
    ) -> None:
        user, key = _actor(body, context)
        team_id = context.team_id
        channel, ts = _channel_and_ts(body)
        try:
            reply, claimed, live = await self._record(
                conversation_id=conversation_id, key=key, step=step, value=value, team_id=team_id
            )
        except InvalidAnswer as err:
            await self.rt.delivery.ephemeral(
                client, key=key, channel=channel, user=user, text=err.message
            )
            return
        except (ConversationError, OptedOut):
            await self.rt.delivery.ephemeral(
                client, key=key, channel=channel, user=user, text=STALE_TEXT
            )
            return
        if reply.duplicate:
            return  # a double click: the first one already answered and replied
        await self._after_answer(
            client,
            reply,
            key=key,
            team_id=team_id,
            channel=channel,
            shown=shown,
            clicked=(channel, ts, _question_mrkdwn(body)),
            claimed=claimed,
            live=live,
        )

    async def just_ack(self, ack: Any) -> None:
        """Clicks that change nothing here, yet Slack sends and wants acknowledged: ticking a
        checkbox (Submit answers), a link button (the browser opens the page)."""
        await ack()

    async def on_form(
        self,
        ack: Any,
        body: dict[str, Any],
        action: dict[str, Any],
        client: AsyncWebClient,
        context: Any,
    ) -> None:
        await ack()
        step = _step_of(str(action.get("action_id", "")))
        user, key = _actor(body, context)
        channel, ts = _channel_and_ts(body)
        try:
            conversation_id, _ = blocks.decode(action.get("value"))
            reply = await self.rt.surveys.show(conversation_id=conversation_id, respondent_key=key)
        except (ValueError, ConversationError):
            return
        ask = current_ask(reply)
        if ask is None or ask.step != step or reply.done:
            await self.rt.delivery.ephemeral(
                client, key=key, channel=channel, user=user, text=STALE_TEXT
            )
            return
        title = self.rt.catalog.title(reply.flow_id, "Survey")
        view = blocks.form_modal(ask, conversation_id, channel=channel, ts=ts, title=title)
        await client.views_open(trigger_id=str(body.get("trigger_id", "")), view=view)

    async def on_modal(
        self,
        ack: Any,
        body: dict[str, Any],
        view: dict[str, Any],
        client: AsyncWebClient,
        context: Any,
    ) -> None:
        try:
            meta, value = blocks.modal_answer(view)
            conversation_id, step = str(meta["c"])[:32], str(meta["s"])[:64]
            channel = str(meta.get("ch", ""))[:32]
        except (ValueError, KeyError, TypeError):
            await ack()
            return
        if isinstance(value, dict) and value.get("email") and not value.get("consent"):
            await ack(
                response_action="errors",
                errors={blocks.CONSENT_BLOCK: "Please tick this to share your email."},
            )
            return
        _user, key = _actor(body, context)
        team_id = context.team_id
        try:
            reply, claimed, live = await self._record(
                conversation_id=conversation_id, key=key, step=step, value=value, team_id=team_id
            )
        except InvalidAnswer as err:
            field = blocks.EMAIL_BLOCK if isinstance(value, dict) else blocks.TEXT_BLOCK
            await ack(response_action="errors", errors={field: err.message[:150]})
            return
        except ConversationError:  # answered meanwhile (by a DM, a click), or closed
            await ack()
            if channel:
                await self._say(client, key, channel, STALE_TEXT)
            return
        except OptedOut:
            await ack()
            return
        await ack()
        if reply.duplicate:
            return
        shown = blocks.display_answer(reply.recorded.get("value"))
        await self._after_answer(
            client,
            reply,
            key=key,
            team_id=team_id,
            channel=channel,
            shown=shown,
            claimed=claimed,
            live=live,
        )

    async def on_opt_out(
        self, ack: Any, body: dict[str, Any], client: AsyncWebClient, context: Any
    ) -> None:
        await ack()
        _user, key = _actor(body, context)
        channel, _ = _channel_and_ts(body)
        await self.opt_out(
            client,
            key=key,
            channel=channel,
            source="slack:button",
            quiet=True,
        )

    # --- App Home -----------------------------------------------------------------------------

    async def on_home_opened(
        self, event: dict[str, Any], client: AsyncWebClient, context: Any
    ) -> None:
        if event.get("tab", "home") != "home" or not event.get("user"):
            return
        await home.publish(self.rt, client, team_id=context.team_id, user_id=str(event["user"]))

    async def on_resume(
        self,
        ack: Any,
        body: dict[str, Any],
        action: dict[str, Any],
        client: AsyncWebClient,
        context: Any,
    ) -> None:
        await ack()
        user, key = _actor(body, context)
        try:
            conversation_id, _ = blocks.decode(action.get("value"))
            reply = await self.rt.surveys.show(conversation_id=conversation_id, respondent_key=key)
        except (ValueError, ConversationError):
            return
        if reply.done:  # a Home tab left open after the survey finished: nothing to resume
            await home.publish(self.rt, client, team_id=context.team_id, user_id=user)
            return
        channel = await self.rt.delivery.dm_channel(client, key=key, user_id=user)
        await self._ask_again(client, reply, channel=channel, team_id=context.team_id)

    async def on_start(
        self, ack: Any, body: dict[str, Any], client: AsyncWebClient, context: Any
    ) -> None:
        await ack()
        user, key = _actor(body, context)
        flow = self.welcome_flow()  # respondents may start the welcome flow, nothing else
        # On first contact only: a Home tab left open elsewhere must not run it again, and a
        # double click resumes the new conversation without posting its question twice.
        if flow is not None and await self.first_contact(key):
            await self.start_flow(
                client, flow=flow, team_id=context.team_id, user_id=user, repost=False
            )
        await home.publish(self.rt, client, team_id=context.team_id, user_id=user)

    async def on_home_opt_out(
        self,
        ack: Any,
        body: dict[str, Any],
        action: dict[str, Any],
        client: AsyncWebClient,
        context: Any,
    ) -> None:
        await ack()
        user, key = _actor(body, context)
        try:
            if action.get("selected_options"):
                await self.opt_out(client, key=key, user_id=user, source="slack:home")
        finally:  # the Home shows the toggle as it now stands, whatever Slack did meanwhile
            await home.publish(self.rt, client, team_id=context.team_id, user_id=user)

    # --- new members --------------------------------------------------------------------------

    async def on_team_join(
        self, body: dict[str, Any], event: dict[str, Any], client: AsyncWebClient, context: Any
    ) -> None:
        if not self.rt.settings.slack_team_join:
            return
        user = event.get("user") or {}
        user_id = user.get("id") if isinstance(user, dict) else user
        if not user_id or (isinstance(user, dict) and (user.get("is_bot") or user.get("deleted"))):
            return
        key = delivery_key(body)
        if key is not None and not await self.rt.inbox.claim(key, team_id=context.team_id):
            return
        try:
            flow = self.welcome_flow()
            if flow is not None and await self.first_contact(
                respondent_key(context.team_id, str(user_id))
            ):
                await self.start_flow(
                    client, flow=flow, team_id=context.team_id, user_id=str(user_id)
                )
        except Undeliverable as err:  # a guest or an account Slack will not DM: nobody to ask
            log.info("team_join: not surveying %s: %s", user_id, err)
        finally:
            if key is not None:
                await self.rt.inbox.finish(key)


def register(runtime: SlackRuntime) -> Respondents:
    """Attach the respondent listeners to the runtime's Bolt app."""
    handlers = Respondents(runtime)
    bolt, track = runtime.bolt, runtime.tracked
    bolt.action(re.compile(r"^parley:answer:"))(track(handlers.on_answer))
    bolt.action(re.compile(r"^parley:submit:"))(track(handlers.on_submit))
    bolt.action(re.compile(r"^parley:pick:"))(track(handlers.just_ack))
    bolt.action(blocks.DASHBOARD)(track(handlers.just_ack))
    bolt.action(re.compile(r"^parley:form:"))(track(handlers.on_form))
    bolt.action(blocks.OPT_OUT)(track(handlers.on_opt_out))
    bolt.action(blocks.RESUME)(track(handlers.on_resume))
    bolt.action(blocks.START)(track(handlers.on_start))
    bolt.action(blocks.HOME_OPT_OUT)(track(handlers.on_home_opt_out))
    bolt.view(blocks.MODAL)(track(handlers.on_modal))
    bolt.event("message")(track(handlers.on_message))
    bolt.event("app_home_opened")(track(handlers.on_home_opened))
    bolt.event("team_join")(track(handlers.on_team_join))
    runtime.respondents = handlers
    return handlers
