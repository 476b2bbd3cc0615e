"""Sending to Slack exactly once: questions are claimed in the database before they are
posted, remembered (channel, ts) after, and updated to show the answer.

A claimed question that was never recorded as posted (a crash between recording the answer
and the reply) is found by the recovery sweep. Every question carries Slack message metadata
naming its (conversation, step), so the sweep first looks for it in the DM's history — it may
have been sent just before the crash — and posts it only if Slack does not have it. Errors that will
never succeed (the person left, the account is inactive) are recorded and not retried;
429/5xx were already retried by the client's retry handlers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy import Connection

from bot.channels.slack.blocks import (
    END_TEXT,
    Message,
    answered_blocks,
    closed_blocks,
    escape,
    fallback,
    render_reply,
)
from bot.channels.slack.dedupe import STALE_CLAIM
from bot.engine.messages import End, Output, Say
from bot.services.conversations import Reply
from bot.store import slack as store
from bot.store.database import Database
from bot.store.models import as_utc

log = logging.getLogger("parley.slack")

PERMANENT_ERRORS = frozenset(
    {
        "user_not_found",
        "users_not_found",
        "user_disabled",
        "channel_not_found",
        "is_archived",
        "cannot_dm_bot",
        "not_in_channel",
        "user_is_restricted",
        "invalid_users",
        "messages_tab_disabled",
    }
)


# Errors a later try can get past (Slack's own trouble); any other error Slack names (e.g.
# invalid_blocks, token_revoked) will say the same next time.
PASSING_ERRORS = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)


QUESTION_EVENT = "parley_question"
HISTORY_PAGE = 100  # DM messages per conversations.history call (Slack's own default)
HISTORY_PAGES = 3  # newest pages searched for a question in doubt: rare, and Tier 3 (~50/min)


def _question_tag(conversation_id: str, step: str) -> dict[str, Any]:
    """Message metadata naming the (conversation, step) a question message asks."""
    return {
        "event_type": QUESTION_EVENT,
        "event_payload": {"conversation": conversation_id, "step": step},
    }


ASKED_AGAIN = "Asked again below ↓"
ALREADY_ANSWERED = "Answered already (above)"
LEAD = "@lead"  # tags the words said just before a question: "<step>@lead#<part>"
CLAIM_MARGIN = timedelta(
    seconds=30
)  # a claim's holder stops waiting this long before it goes stale

_claims_until: ContextVar[float | None] = ContextVar("parley_claims_until", default=None)


@contextlib.contextmanager
def holding_claims() -> Iterator[None]:
    """A piece of work that may claim deliveries (a Slack listener, one item of the recovery
    sweep): every Slack call inside must be done before those claims go stale
    (``STALE_CLAIM``), or the sweep would take them over and post while this work still meant
    to. The rate-limit retry reads it; it ends with the work, so nothing after inherits it."""
    token = _claims_until.set(time.monotonic() + (STALE_CLAIM - CLAIM_MARGIN).total_seconds())
    try:
        yield
    finally:
        _claims_until.reset(token)


def seconds_left() -> float | None:
    """Until this task's claims go stale (None: it holds none)."""
    until = _claims_until.get()
    return None if until is None else until - time.monotonic()


def _tag_for(
    conversation_id: str, messages: list[Message], index: int, *, closing: bool = False
) -> dict[str, Any] | None:
    """The metadata a message is posted with: its question, or the question it leads into —
    ``<step>@lead#k`` for the k-th message of the words said just before it (long words go
    out as several messages, and a failure may come between them) — or, in a reply that
    ends the survey (``closing``), ``@end#k`` for the k-th message of its closing words."""
    step = messages[index].step
    if step is None:
        ahead = index
        while ahead < len(messages) and messages[ahead].step is None:
            ahead += 1
        start = index
        while start > 0 and messages[start - 1].step is None:
            start -= 1
        if ahead < len(messages):
            step = f"{messages[ahead].step}{LEAD}#{index - start}"
        elif closing:
            step = f"{store.CLOSING}#{index - start}"
    return _question_tag(conversation_id, step) if step is not None else None


def _said_before(tag: dict[str, Any] | None, said: frozenset[str]) -> bool:
    """Whether a lead-in message (or a part of the closing words) is already in the DM
    (``said``: the tags Slack shows; a bare ``<step>@lead``, as earlier versions tagged,
    stands for all of them)."""
    if tag is None:
        return False
    label = str(tag["event_payload"]["step"])
    said_part = LEAD in label or label.startswith(f"{store.CLOSING}#")
    return said_part and (label in said or label.split("#")[0] in said)


class Undeliverable(Exception):
    """Slack said this will never work for this person; already recorded."""


def slack_error(err: SlackApiError) -> str:
    """The error code Slack answered with (``user_not_found``…), "" when there is none."""
    return str(err.response.get("error", "")) if err.response is not None else ""


def may_pass(err: BaseException) -> bool:
    """Whether trying again later can succeed: Slack down, slow or rate limiting, a timeout,
    a lost connection, or this process stopping — not an error Slack gave for this message."""
    if isinstance(err, Undeliverable):
        return False
    if isinstance(err, SlackApiError):
        status = int(getattr(err.response, "status_code", 0) or 0)
        return status >= 500 or status == 429 or slack_error(err) in PASSING_ERRORS
    return True


@dataclass(frozen=True)
class Outgoing:
    """A message of a reply, and whether this caller is the one to post it; ``replaces``:
    the copy of the question it asks again (posted earlier, buttons still live)."""

    message: Message
    mine: bool
    replaces: store.MessageRow | None = None


def claim_reply(
    conn: Connection,
    reply: Reply,
    *,
    team_id: str | None,
    offer_opt_out: bool = False,
    repost: bool = False,
    stale_after: timedelta = STALE_CLAIM,
) -> list[Outgoing]:
    """Render a reply and claim its questions, inside a transaction (the answer's own, when
    passed to ``Surveys.answer(within=...)``): a question is claimed by one caller only, and
    the messages around it go with it (two callers never both post an intro).
    ``offer_opt_out``: the reply is a survey's first words (its intro gets the button)."""
    outgoing = []
    messages = render_reply(reply.outputs, reply.conversation_id, offer_opt_out=offer_opt_out)
    # A survey's closing words are claimed too (under CLOSING), so they are said once: a
    # failure or a crash leaves the claim for the recovery sweep, as for a question.
    closes = reply.done and any(m.step is None for m in messages)
    closing_ours = closes and store.claim_message(
        conn,
        conversation_id=reply.conversation_id,
        step=store.CLOSING,
        respondent_key=reply.respondent_key,
        team_id=team_id,
        question=closing_words(reply.outputs),  # what the sweep says if this post fails
        stale_after=stale_after,
    )
    for message in messages:
        if message.step is None:
            outgoing.append(Outgoing(message, closing_ours if closes else True))
            continue
        outgoing.append(
            _claim(
                conn,
                reply.conversation_id,
                message,
                reply.respondent_key,
                team_id,
                repost=repost,
                stale_after=stale_after,
            )
        )
    if any(o.message.step is not None and not o.mine for o in outgoing):
        # another caller holds a question of this reply: the words around it are theirs too
        outgoing = [Outgoing(o.message, o.mine and o.message.step is not None) for o in outgoing]
    return outgoing


def closing_words(outputs: list[Output]) -> str:
    """The words a reply that ends a survey says, as one text (kept with their claim, so the
    sweep says the very same words: an anonymous flow's state no longer holds what led to
    them). Slack's own limit for the row applies: 3000 characters."""
    texts = [o.text for o in outputs if isinstance(o, Say) and o.text]
    end = next((o for o in outputs if isinstance(o, End)), None)
    if end is not None:
        texts.append(end.text or END_TEXT.get(end.reason, ""))
    return "\n\n".join(t for t in texts if t)[:3000]


def _release(conversation_id: str, steps: list[str], conn: Connection) -> None:
    """Posting failed for good: forget the claims (nothing is left for the sweep to post)."""
    for step in steps:
        store.release_message(conn, conversation_id=conversation_id, step=step)


def _mark_stale(conversation_id: str, steps: list[str], conn: Connection) -> None:
    stale_at = store.utcnow() - STALE_CLAIM - timedelta(seconds=1)
    for step in steps:
        store.let_go_message(conn, conversation_id=conversation_id, step=step, stale_at=stale_at)


def is_stale(claimed_at: datetime) -> bool:
    """Whether nobody is posting a claimed question now (its claim outlived STALE_CLAIM, or
    its poster gave up and marked it so)."""
    claimed = as_utc(claimed_at)
    return claimed < store.utcnow() - STALE_CLAIM


def _claim(
    conn: Connection,
    conversation_id: str,
    message: Message,
    key: str,
    team_id: str | None,
    *,
    repost: bool,
    stale_after: timedelta,
) -> Outgoing:
    step = message.step
    assert step is not None
    claimed = store.claim_message(
        conn,
        conversation_id=conversation_id,
        step=step,
        respondent_key=key,
        team_id=team_id,
        question=message.question,
        stale_after=stale_after,
    )
    if not claimed and repost:
        before = store.get_message(conn, conversation_id=conversation_id, step=step)
        store.repost_message(
            conn, conversation_id=conversation_id, step=step, question=message.question
        )
        shown = before is not None and before.channel and before.ts
        return Outgoing(message, True, replaces=before if shown else None)
    return Outgoing(message, claimed)


class Delivery:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def dm_channel(self, client: AsyncWebClient, *, key: str, user_id: str) -> str:
        """The person's DM channel: from the database, else ``conversations.open`` (Tier 3)."""
        cached = await self.db.read(partial(store.get_dm, respondent_key=key))
        if cached:
            return cached
        response = await self._call(
            key, "conversations.open", client.conversations_open(users=user_id)
        )
        channel = str((response.get("channel") or {}).get("id", ""))
        await self.remember_dm(key=key, channel=channel)
        return channel

    async def remember_dm(self, *, key: str, channel: str) -> None:
        if not channel:
            return
        await self.db.run(partial(store.set_dm, respondent_key=key, channel=channel))

    async def send_reply(
        self,
        client: AsyncWebClient,
        reply: Reply,
        *,
        channel: str,
        team_id: str | None,
        offer_opt_out: bool = False,
        repost: bool = False,
        stale_after: timedelta = STALE_CLAIM,
        claimed: list[Outgoing] | None = None,
        said: frozenset[str] = frozenset(),
    ) -> None:
        """Post a service reply; each question once (``repost`` = the person asked to see it
        again). ``claimed``: the reply was already claimed in the answer's transaction.
        ``said``: lead-in messages the DM already shows (``unshown_lead_in``), left out."""
        if claimed is None:
            claimed = await self.db.run(
                partial(
                    claim_reply,
                    reply=reply,
                    team_id=team_id,
                    offer_opt_out=offer_opt_out,
                    repost=repost,
                    stale_after=stale_after,
                )
            )
        key = reply.respondent_key
        ours = [outgoing for outgoing in claimed if outgoing.mine]
        mine = [outgoing.message for outgoing in ours]
        closing = reply.done and any(m.step is None for m in mine)  # and the claim is ours
        ts_said: list[str] = []
        for sent, message in enumerate(mine):
            tag = _tag_for(reply.conversation_id, mine, sent, closing=reply.done)
            if message.step is None and _said_before(tag, said):
                continue
            try:
                ts = await self.post(client, key=key, channel=channel, message=message, tag=tag)
            except BaseException as err:
                # A failure that may pass (Slack down past the retries, a crash) keeps the
                # claims, marked stale (nobody is posting them now): the recovery sweep — or
                # the person saying "hi" — posts the questions once Slack answers again.
                # One that never will lets go of them, or the sweep would retry forever.
                unsent = [m.step for m in mine[sent:] if m.step is not None]
                unsent += [store.CLOSING] if closing else []
                let_go = _release if not may_pass(err) else _mark_stale
                with contextlib.suppress(Exception):  # the database may be what failed
                    await self.db.run(partial(let_go, reply.conversation_id, unsent))
                raise
            if message.step is not None:
                await self.record_posted(reply.conversation_id, message.step, channel, ts)
            else:
                ts_said.append(ts)
            old = ours[sent].replaces
            if old is not None and old.ts != ts:  # one live copy: the older one loses its buttons
                await self._one_live_copy(client, old, message, channel=channel, ts=ts)
        if closing and ts_said:  # all said: recorded (a later sweep must not claim it anew)
            said_at = partial(
                store.closing_said,
                conversation_id=reply.conversation_id,
                channel=channel,
                ts=ts_said[-1],
            )
            await self.db.run(said_at)
        elif closing:  # every part was in the DM already
            await self.db.run(partial(_release, reply.conversation_id, [store.CLOSING]))

    async def release(self, conversation_id: str, claimed: list[Outgoing]) -> None:
        """Let go of claims that will not be posted (so the sweep does not retry them)."""
        steps = [o.message.step for o in claimed if o.mine and o.message.step is not None]
        if any(o.mine and o.message.step is None for o in claimed):
            steps.append(store.CLOSING)  # if it was a survey's closing words, their claim
        if steps:
            await self.db.run(partial(_release, conversation_id, steps))

    async def record_posted(self, conversation_id: str, step: str, channel: str, ts: str) -> None:
        """The question is in Slack as (channel, ts): the claim is done, the copy is known."""
        await self.db.run(
            partial(
                store.message_posted,
                conversation_id=conversation_id,
                step=step,
                channel=channel,
                ts=ts,
            )
        )

    async def post(
        self,
        client: AsyncWebClient,
        *,
        key: str,
        channel: str,
        message: Message,
        tag: dict[str, Any] | None = None,
    ) -> str:
        """Post a message; ``tag`` is Slack message metadata saying which question it asks."""
        response = await self._call(
            key,
            "chat.postMessage",
            client.chat_postMessage(
                channel=channel,
                text=message.text,
                blocks=message.blocks,
                unfurl_links=False,
                metadata=tag,
            ),
        )
        return str(response.get("ts", ""))

    async def delivered(
        self, client: AsyncWebClient, *, key: str, channel: str, conversation_id: str
    ) -> dict[str, str]:
        """What of a conversation Slack already shows though it may never have been recorded
        (a crash, or a lost response, between sending and recording), by the metadata each
        message carries: ``{step: ts}`` for questions, ``{step@lead#k: ts}`` for the words
        said before one — so the sweep neither asks twice nor says twice."""
        found: dict[str, str] = {}
        cursor: str | None = None
        for _ in range(HISTORY_PAGES):
            response = await self._call(
                key,
                "conversations.history",
                client.conversations_history(
                    channel=channel, include_all_metadata=True, limit=HISTORY_PAGE, cursor=cursor
                ),
            )
            for message in response.get("messages") or []:
                metadata = message.get("metadata") or {}
                payload = metadata.get("event_payload") or {}
                if (
                    metadata.get("event_type") == QUESTION_EVENT
                    and payload.get("conversation") == conversation_id
                    and isinstance(payload.get("step"), str)
                    and message.get("ts")
                ):
                    found.setdefault(payload["step"], str(message["ts"]))
            cursor = (response.get("response_metadata") or {}).get("next_cursor") or None
            if not response.get("has_more") or cursor is None:
                break
        return found

    async def unshown_lead_in(
        self, client: AsyncWebClient, reply: Reply, *, channel: str
    ) -> tuple[bool, str | None, frozenset[str]]:
        """For a question Parley has no record of posting, with ``reply`` from
        ``Surveys.show(with_lead_in=True)``: what of it Slack already shows. Returns whether
        it is a survey's first words still to say (its first message gets the opt-out
        button), the question's ts when Slack has it, and the lead-in messages Slack shows
        (for ``send_reply(said=...)``: not said twice)."""
        step = reply.step or ""
        shown = await self.delivered(
            client, key=reply.respondent_key, channel=channel, conversation_id=reply.conversation_id
        )
        lead = f"{step}{LEAD}"
        said = frozenset(tag for tag in shown if tag == lead or tag.startswith(f"{lead}#"))
        first_words = reply.from_start and not ({lead, f"{lead}#0"} & said)
        return first_words, shown.get(step), said

    async def mark_answered(
        self,
        client: AsyncWebClient,
        *,
        key: str,
        channel: str,
        ts: str,
        question_mrkdwn: str,
        shown: str,
    ) -> None:
        """Replace the question's buttons by the answer, so it cannot be answered twice."""
        await self._call(
            key,
            "chat.update",
            client.chat_update(
                channel=channel,
                ts=ts,
                text=fallback(f"Your answer: {shown}"),
                blocks=answered_blocks(question_mrkdwn, shown),
            ),
        )

    async def _one_live_copy(
        self,
        client: AsyncWebClient,
        old: store.MessageRow,
        message: Message,
        *,
        channel: str,
        ts: str,
    ) -> None:
        """A question was asked again: the older copy loses its buttons — unless it was
        answered while the new one went out; then the new copy is the one to close (and the
        old one keeps showing the answer)."""
        assert message.step is not None
        still = await self.db.read(
            partial(store.waits_on, conversation_id=old.conversation_id, step=message.step)
        )
        if still:
            await self.retire(client, old, note=ASKED_AGAIN)
            return
        new = dataclasses.replace(old, channel=channel, ts=ts, question=message.question)
        await self.retire(client, new, note=ALREADY_ANSWERED)

    async def retire(self, client: AsyncWebClient, copy: store.MessageRow, *, note: str) -> None:
        """A copy of a question that must not be answered any more shows ``note`` instead of
        its buttons. Only how the DM looks: a failure is logged, never the caller's."""
        if not (copy.channel and copy.ts):
            return
        try:
            await self._call(
                copy.respondent_key,
                "chat.update",
                client.chat_update(
                    channel=copy.channel,
                    ts=copy.ts,
                    text=fallback(note),
                    blocks=closed_blocks(escape(copy.question), note),
                ),
            )
        except (SlackApiError, Undeliverable, aiohttp.ClientError, TimeoutError) as err:
            log.info("could not take the buttons off an old question message: %r", err)

    async def ephemeral(
        self, client: AsyncWebClient, *, key: str, channel: str, user: str, text: str
    ) -> None:
        await self._call(
            key,
            "chat.postEphemeral",
            client.chat_postEphemeral(channel=channel, user=user, text=fallback(text)),
        )

    async def _call(self, key: str, method: str, call: Any) -> Any:
        try:
            return await call
        except SlackApiError as err:
            error = slack_error(err)
            if error in PERMANENT_ERRORS:
                await self.db.run(
                    partial(
                        store.record_undeliverable, respondent_key=key, error=error, method=method
                    )
                )
                log.info(
                    "Slack %s for %s failed for good: %s (recorded, not retried)",
                    method,
                    key,
                    error,
                )
                raise Undeliverable(error) from err
            raise
