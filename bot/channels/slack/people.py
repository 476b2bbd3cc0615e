"""Who is talking: Slack ids → Parley's respondent key, and the profile used for piping.

``users.info`` is cached per process for an hour: piping needs a first name and a time zone,
not a fresh copy of the profile on every click.
"""

from __future__ import annotations

import time
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

PROFILE_TTL = 3600.0
MAX_CACHED = 10_000


def respondent_key(team_id: str | None, user_id: str) -> str:
    """``slack:<team>:<user>`` — the same person in two workspaces is two respondents."""
    return f"slack:{(team_id or '')[:32]}:{user_id[:32]}"


class Profiles:
    """First name and time zone from ``users.info``, cached with a TTL."""

    def __init__(self, ttl: float = PROFILE_TTL) -> None:
        self.ttl = ttl
        self._cache: dict[str, tuple[float, dict[str, Any], str | None]] = {}

    async def get(
        self, client: AsyncWebClient, user_id: str, *, team_id: str | None = None
    ) -> tuple[dict[str, Any], str | None]:
        """(attributes, time zone); an unknown user just gets no attributes. Cached per
        workspace: with OAuth installs, two workspaces' user ids are not one person."""
        now = time.monotonic()
        cache_key = f"{team_id or ''}:{user_id}"
        hit = self._cache.get(cache_key)
        if hit is not None and hit[0] > now:
            return hit[1], hit[2]
        try:
            response = await client.users_info(user=user_id)
        except SlackApiError:
            return {}, None
        user = response.get("user") or {}
        profile = user.get("profile") or {}
        first = (profile.get("first_name") or "").strip()
        if not first:
            name = (
                profile.get("display_name")
                or profile.get("real_name")
                or user.get("real_name")
                or ""
            ).strip()
            first = name.split()[0] if name else ""
        attributes = {"first_name": first[:80]} if first else {}
        timezone = user.get("tz") if isinstance(user.get("tz"), str) else None
        if len(self._cache) >= MAX_CACHED:
            self._cache.clear()
        self._cache[cache_key] = (now + self.ttl, attributes, timezone)
        return attributes, timezone
