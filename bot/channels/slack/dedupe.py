"""Exactly-once handling of Slack deliveries (Bolt does not deduplicate retries).

The key of a delivery is claimed with one INSERT in the database, so it holds across
replicas and restarts: ``event:<event_id>`` for events, plus ``msg:<client_msg_id>`` for
messages. A handled key is kept for ``TTL``; a claim
whose handler crashed is taken again by Slack's retry or the recovery sweep.
"""

from __future__ import annotations

from datetime import timedelta
from functools import partial
from typing import Any

from bot.store import slack as store
from bot.store.database import Database

TTL = timedelta(hours=24)
# A claim (of a delivery, or of a question to post) this old with no result: its holder died.
# Longer than the Web API client's retries can take (a 429 is waited out up to three times),
# so neither a Slack retry nor the recovery sweep takes over from a handler still retrying.
STALE_CLAIM = timedelta(minutes=5)


def delivery_key(body: dict[str, Any]) -> str | None:
    """The dedupe key of an Events API body: the message's ``client_msg_id`` when it has one
    (the same message can reach us as two events), else the ``event_id`` Slack retries with."""
    event = body.get("event") or {}
    client_msg_id = event.get("client_msg_id")
    if isinstance(client_msg_id, str) and client_msg_id:
        return f"msg:{client_msg_id[:100]}"
    event_id = body.get("event_id")
    if isinstance(event_id, str) and event_id:
        return f"event:{event_id[:100]}"
    return None


class Inbox:
    """Claims and finishes deliveries, each in its own short transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def claim(
        self,
        key: str,
        *,
        team_id: str | None,
        payload: dict[str, Any] | None = None,
        respondent_key: str | None = None,
        stale_after: timedelta = STALE_CLAIM,
    ) -> bool:
        """True when this caller now owns the delivery; False when it was already taken (and
        not abandoned: claimed less than ``stale_after`` ago)."""
        return await self.db.run(
            partial(
                store.claim_delivery,
                key=key,
                ttl=TTL,
                team_id=team_id,
                payload=payload,
                respondent_key=respondent_key,
                stale_after=stale_after,
            )
        )

    async def finish(self, key: str) -> None:
        await self.db.run(partial(store.finish_delivery, key=key))
