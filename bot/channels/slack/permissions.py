"""Who may run researcher commands: ``PARLEY_RESEARCHERS`` user ids and ``@usergroup`` handles.

Usergroup membership comes from ``usergroups.list`` (handle → id) and
``usergroups.users.list`` (members), cached per team for a few minutes so a burst of
commands costs no API calls. Empty settings mean nobody (the safe default). When Slack cannot
be asked, the answer is "no": a researcher retries, a stranger never gets in by accident.
"""

from __future__ import annotations

import logging
import time

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger("parley.slack")
MEMBERSHIP_TTL = 300.0


class Roles:
    """Membership checks for one role (researchers, PMs) given its configured entries."""

    def __init__(self, entries: list[str], *, ttl: float = MEMBERSHIP_TTL) -> None:
        self.users = {e for e in entries if not e.startswith("@")}
        self.handles = {e[1:].lower() for e in entries if e.startswith("@") and len(e) > 1}
        self.ttl = ttl
        self._members: dict[str, tuple[float, frozenset[str]]] = {}

    async def allows(self, client: AsyncWebClient, team_id: str | None, user_id: str) -> bool:
        if user_id in self.users:
            return True
        if not self.handles:
            return False
        return user_id in await self._group_members(client, team_id or "")

    async def _group_members(self, client: AsyncWebClient, team_id: str) -> frozenset[str]:
        now = time.monotonic()
        hit = self._members.get(team_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        members: set[str] = set()
        try:
            groups = await client.usergroups_list()
            for group in groups.get("usergroups") or []:
                if str(group.get("handle", "")).lower() in self.handles:
                    users = await client.usergroups_users_list(usergroup=group["id"])
                    members.update(users.get("users") or [])
        except SlackApiError as err:
            log.warning("cannot read usergroups for %s: %s", team_id, err.response.get("error"))
            return frozenset()  # not cached: the next command asks again
        frozen = frozenset(members)
        self._members[team_id] = (now + self.ttl, frozen)
        return frozen
