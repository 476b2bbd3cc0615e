"""What a person typed in a DM, from the text of Slack's message event.

Why: Slack sends a message's ``text`` in its own markup — ``&``, ``<`` and ``>`` escaped, links,
email addresses and mentions wrapped in ``<…>`` — so "R&D" arrives as ``R&amp;D`` and would
match no choice, and a text answer would be stored (and counted against ``max_length``) with
Slack's codes in it. Answers are kept as the person wrote them, whatever channel they came from.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

MAX_TEXT = 40_000  # Slack's own limit for a message: nothing real is cut (so counts are right)
_ID = 32  # Slack ids and timestamps are short: longer values are cut, never trusted whole

_MARKUP = re.compile(r"<([^<>]*)>")
_ENTITIES = {"&lt;": "<", "&gt;": ">", "&amp;": "&"}


def _plain(inner: str) -> str:
    target, bar, label = inner.partition("|")
    if target.startswith(("@", "#")):  # <@U123>, <#C123|general>: a mention
        return (target[0] + label) if bar else target
    if target.startswith("!"):  # <!here>, <!subteam^S1|@research>, <!date^…|fallback>
        if bar:
            return label
        return "@" + target[1:].split("^", 1)[0]
    if bar:
        return label  # <https://acme.io|acme.io>: what was typed
    return target.removeprefix("mailto:")


def typed(text: str) -> str:
    """Slack's message text back to the characters the person typed."""
    if "<" in text:
        text = _MARKUP.sub(lambda m: _plain(m.group(1)), text)
    if "&" in text:
        text = re.sub(r"&(?:lt|gt|amp);", lambda m: _ENTITIES[m.group(0)], text)
    return text


@dataclass(frozen=True)
class DirectMessage:
    """A person's DM to the bot: what the event said, as stored for the recovery sweep."""

    team_id: str | None
    user: str
    channel: str
    text: str
    ts: str | None = None  # when it was written
    thread_ts: str | None = None  # the message whose thread it was written in, if any

    @classmethod
    def from_event(cls, event: dict[str, Any], team_id: str | None) -> DirectMessage:
        thread = event.get("thread_ts")
        return cls(
            team_id=team_id,
            user=str(event["user"])[:_ID],
            channel=str(event.get("channel", ""))[:_ID],
            text=typed(str(event.get("text") or "")[: MAX_TEXT * 2])[:MAX_TEXT],
            ts=str(event["ts"])[:_ID] if event.get("ts") else None,
            thread_ts=str(thread)[:_ID] if thread and thread != event.get("ts") else None,
        )

    @classmethod
    def from_stored(cls, payload: dict[str, Any]) -> DirectMessage:
        def text(name: str) -> str | None:
            value = payload.get(name)
            return str(value) if value else None

        written = str(payload.get("text", ""))
        return cls(
            team_id=text("team_id"),
            user=str(payload.get("user", "")),
            channel=str(payload.get("channel", "")),
            # stored before text was kept as typed (those payloads have no "ts")
            text=written if "ts" in payload else typed(written),
            ts=text("ts"),
            thread_ts=text("thread_ts"),
        )

    def stored(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def written_before(ts: str | None, shown: str | None) -> bool:
    """Whether a message was written before a question was shown (Slack ts order)."""
    try:
        return ts is not None and shown is not None and float(ts) < float(shown)
    except ValueError:
        return False
