"""The recovery sweep: what a crash left half-done is finished, on every replica, safely.

* a DM reply that was acked but never handled (the payload is still pending in the inbox:
  a crash, or Slack failing past its retries) is handled now;
* a question that was claimed but never recorded as posted (a crash, or Slack failing, after
  the answer was recorded) is posted now, if it is still the conversation's current question
  and the DM's history does not already hold it (the crash may have come right after the
  send: every question carries metadata naming its conversation and step).

What still fails for a passing reason stays for the next pass, for a day at most; what never
can (a person Slack no longer knows) is dropped at once. Either way it is logged; a question
given up, or a person Slack does not know, is also kept as a ``slack.undeliverable`` event.

Claims are retaken with a conditional UPDATE, so two replicas never both do it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING

from sqlalchemy import Connection

from bot.channels.slack.dedupe import TTL
from bot.channels.slack.delivery import Undeliverable, holding_claims
from bot.channels.slack.typed import DirectMessage
from bot.engine.messages import Say
from bot.errors import Busy, ParleyError
from bot.store import slack as store
from bot.store.models import utcnow

if TYPE_CHECKING:
    from slack_sdk.web.async_client import AsyncWebClient

    from bot.channels.slack.app import SlackRuntime
    from bot.services.conversations import Reply

log = logging.getLogger("parley.slack")

GIVE_UP_AFTER = TTL  # a question is retried as long as a DM reply is
MAX_FAILURES_PER_PASS = 3  # posts that may pass but failed, before a pass stops trying


async def recover_once(runtime: SlackRuntime, *, after: timedelta) -> int:
    """One pass; returns how many things it finished."""
    cutoff = utcnow() - after
    await _give_up_old(runtime, stale_before=cutoff)

    def scan(conn: Connection) -> tuple[list[store.PendingDelivery], list[store.MessageRow]]:
        return (
            store.stale_deliveries(conn, older_than=cutoff),
            store.unsent_messages(conn, older_than=cutoff),
        )

    pending, unsent = await runtime.db.read(scan)
    done = 0
    for row in pending:
        done += await _redo_dm(runtime, row, after=after)
    failing = 0
    for message in unsent:
        if failing >= MAX_FAILURES_PER_PASS:
            break  # Slack is down: the rest waits for the next pass
        outcome = await _repost(runtime, message, after=after)
        done += outcome == DONE
        failing += outcome == FAILING
    await runtime.db.run(store.purge_deliveries)
    await runtime.db.run(store.drop_closed_messages)
    return done


async def _give_up_old(runtime: SlackRuntime, *, stale_before: datetime) -> None:
    """What kept failing for a day is dropped (and logged): the person can still come back."""
    dropped = await runtime.db.run(store.give_up_deliveries)
    if dropped:
        log.warning("recovery: gave up on %d DM replies that kept failing for a day", dropped)
    given_up = partial(
        store.give_up_messages, older_than=utcnow() - GIVE_UP_AFTER, stale_before=stale_before
    )
    for message in await runtime.db.run(given_up):
        log.warning(
            "recovery: gave up posting %s/%s after a day of failures; the person can pick "
            "the survey up again from the App Home or by messaging the bot",
            message.conversation_id,
            message.step,
        )


async def _redo_dm(runtime: SlackRuntime, row: store.PendingDelivery, *, after: timedelta) -> bool:
    """Handle a DM that was acked but never handled; True when it was."""
    payload = row.payload or {}
    if not payload.get("user"):
        # Kept for dedupe only (a team_join, an App Home click): nothing to redo as a
        # DM — handled as one it would greet user "" in channel "" (JSON null is no NULL)
        await runtime.inbox.finish(row.key)
        return False
    if not await runtime.inbox.claim(
        row.key, team_id=row.team_id, payload=row.payload, stale_after=after
    ):
        return False  # another replica has it
    handled = False
    try:
        with holding_claims():  # the inbox claim retaken above, and any it makes
            client = await runtime.client_for(row.team_id)
            await runtime.respondents.handle_dm(
                client,
                DirectMessage.from_stored(payload),
                inbox_key=row.key,
                late=True,
                asked=payload.get("asked"),
            )
            handled = True
    except Busy as err:  # the database was busy with this person: next pass
        log.info("recovery: will retry the DM reply %s: %s", row.key, err)
        return False
    except (ParleyError, Undeliverable) as err:
        log.info("recovery: giving up on %s: %s", row.key, err)
    except Exception as err:  # Slack or the database still failing: next pass
        log.warning("recovery: will retry the DM reply %s: %r", row.key, err)
        return False
    await runtime.inbox.finish(row.key)
    return handled


DONE, SKIPPED, FAILING = "done", "skipped", "failing"


async def _say_closing_words(
    runtime: SlackRuntime,
    client: AsyncWebClient,
    reply: Reply,
    message: store.MessageRow,
    channel: str,
    after: timedelta,
) -> None:
    """A survey's closing words whose post failed (or a crash came first): the very words
    kept with the claim, said now — but not the parts the DM already shows (each part is
    tagged ``@end#k``, and the same words split the same way)."""
    shown = await runtime.delivery.delivered(
        client, key=message.respondent_key, channel=channel, conversation_id=reply.conversation_id
    )
    said = frozenset(tag for tag in shown if tag.startswith(f"{store.CLOSING}#"))
    words = dataclasses.replace(reply, outputs=[Say(message.question)])
    await runtime.delivery.send_reply(
        client, words, channel=channel, team_id=message.team_id, stale_after=after, said=said
    )


async def _repost(runtime: SlackRuntime, message: store.MessageRow, *, after: timedelta) -> str:
    """Post (or find in the DM, and record) a question claimed but never recorded as posted."""
    parts = message.respondent_key.split(":")
    if len(parts) != 3:
        return SKIPPED
    this = {"conversation_id": message.conversation_id, "step": message.step}
    try:
        with holding_claims():  # the claim retaken by send_reply: done inside its life
            client = await runtime.client_for(message.team_id)
            reply = await runtime.surveys.show(
                respondent_key=message.respondent_key,
                with_lead_in=True,  # with the words said before it (an intro, messages)
                conversation_id=message.conversation_id,
            )
            if message.step == store.CLOSING:
                if not message.question or await runtime.surveys.is_opted_out(
                    respondent_key=message.respondent_key
                ):  # nothing to say, or no more words for someone who asked for none
                    await runtime.db.run(partial(store.release_message, **this))
                    return SKIPPED
                channel = await runtime.delivery.dm_channel(
                    client, key=message.respondent_key, user_id=parts[2]
                )
                await _say_closing_words(runtime, client, reply, message, channel, after)
                return DONE
            if reply.step != message.step or reply.done:  # answered or closed meanwhile
                await runtime.db.run(partial(store.release_message, **this))
                return SKIPPED
            channel = await runtime.delivery.dm_channel(
                client, key=message.respondent_key, user_id=parts[2]
            )
            first_words, ts, said = await runtime.delivery.unshown_lead_in(
                client, reply, channel=channel
            )
            if ts is not None:  # sent, then a crash before it was recorded: record it now
                await runtime.delivery.record_posted(
                    message.conversation_id, message.step, channel, ts
                )
                return DONE
            await runtime.delivery.send_reply(
                client,
                reply,
                channel=channel,
                team_id=message.team_id,
                offer_opt_out=first_words,
                stale_after=after,
                said=said,
            )
            return DONE
    except Busy:
        return SKIPPED  # passes: the claim stays for the next pass
    except (ParleyError, Undeliverable) as err:  # never will: let go of the claim
        log.info("recovery: cannot repost %s/%s: %s", message.conversation_id, message.step, err)
        await runtime.db.run(partial(store.release_message, **this))
        return SKIPPED
    except Exception as err:  # Slack still failing: the claim stays for the next pass
        log.warning(
            "recovery: will retry posting %s/%s: %r", message.conversation_id, message.step, err
        )
        return FAILING


async def recover_forever(runtime: SlackRuntime, *, every: timedelta, after: timedelta) -> None:
    while True:
        try:
            await recover_once(runtime, after=after)
        except asyncio.CancelledError:
            raise
        except Exception:  # keep sweeping: one bad row or a database blip must not stop it
            log.exception("Slack recovery sweep failed")
        await asyncio.sleep(every.total_seconds())
