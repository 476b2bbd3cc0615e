"""Who may run researcher commands: ``PARLEY_RESEARCHERS`` user ids and ``@usergroup`` handles.

Usergroup membership comes from ``usergroups.list`` (handle → id) and
``usergroups.users.list`` (members), cached per team for a few minutes so a burst of
commands costs no API calls. Empty settings mean nobody (the safe default). When Slack cannot
be asked, the answer is "no": a researcher retries, a stranger never gets in by accident. A
failure is remembered for a short while and a lookup waits only a few seconds, because every
App Home asks (a free workspace has no user groups: ``usergroups.list`` always fails there,
and respondents' Homes must not wait on it).

An entry may name its workspace (``T0123ABCD:@research``, ``T0123ABCD:U0123ABCD``): then it
counts only there. With OAuth installs a bare handle is refused at start-up (see config), since
every workspace that installs the app has its own groups and could create ``@research``.
"""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.channels.slack.delivery import slack_error

log = logging.getLogger("parley.slack")
MEMBERSHIP_TTL = 300.0
FAILURE_TTL = 30.0  # a failed lookup is not repeated for each Home and command meanwhile
LOOKUP_TIMEOUT = 5.0  # seconds, 429 waits included


class Roles:
    """Membership checks for one role (researchers, PMs) given its configured entries."""

    def __init__(self, entries: list[str], *, ttl: float = MEMBERSHIP_TTL) -> None:
        # (workspace or "" for any, user id) and (workspace or "", lower-case handle)
        self.users: set[tuple[str, str]] = set()
        self.handles: set[tuple[str, str]] = set()
        for entry in entries:
            team, _, name = entry.rpartition(":")
            if name.startswith("@") and len(name) > 1:
                self.handles.add((team, name[1:].lower()))
            elif name:
                self.users.add((team, name))
        self.ttl = ttl
        self._members: dict[str, tuple[float, frozenset[str]]] = {}

    async def allows(self, client: AsyncWebClient, team_id: str | None, user_id: str) -> bool:
        team = team_id or ""
        if ("", user_id) in self.users or (team and (team, user_id) in self.users):
            return True
        handles = frozenset(h for t, h in self.handles if t in ("", team))
        if not handles:
            return False
        return user_id in await self._group_members(client, team, handles)

    async def _group_members(
        self, client: AsyncWebClient, team_id: str, handles: frozenset[str]
    ) -> frozenset[str]:
        now = time.monotonic()
        hit = self._members.get(team_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        members: set[str] = set()
        try:
            async with asyncio.timeout(LOOKUP_TIMEOUT):
                groups = await client.usergroups_list()
                for group in groups.get("usergroups") or []:
                    if str(group.get("handle", "")).lower() in handles:
                        users = await client.usergroups_users_list(usergroup=group["id"])
                        members.update(users.get("users") or [])
        except (SlackApiError, aiohttp.ClientError, TimeoutError) as err:
            why = slack_error(err) if isinstance(err, SlackApiError) else repr(err)
            log.warning(
                "cannot read usergroups for %s (%s); @handles count for nobody there for %ds",
                team_id,
                why,
                FAILURE_TTL,
            )
            self._members[team_id] = (now + FAILURE_TTL, frozenset())
            return frozenset()
        frozen = frozenset(members)
        self._members[team_id] = (now + self.ttl, frozen)
        return frozen
