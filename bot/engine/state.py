"""Conversation state: plain data that round-trips through JSON, so any process can resume it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from bot.jsontext import dumps

Status = Literal["new", "active", "completed", "stopped", "expired"]
OPEN_STATUSES = frozenset({"new", "active"})


@dataclass
class ConversationState:
    flow_id: str
    flow_hash: str
    status: Status = "new"
    current: str | None = None
    answers: dict[str, Any] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    tags: dict[str, float] = field(default_factory=dict)
    profile: dict[str, Any] = field(default_factory=dict)
    steps_taken: int = 0
    response: str | None = None  # anonymous flows: the random id their answers are stored under

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    def to_json(self) -> str:
        # vars(), not dataclasses.asdict: asdict deep-copies every value first, and this runs
        # twice per answer (the engine's working copy, then the saved state)
        return dumps(vars(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ConversationState:
        return cls(**json.loads(text))

    def copy(self) -> ConversationState:
        # Containers copied one level deep: the engine replaces answer values, never edits
        # them in place, so this is as independent as a JSON round trip at a fraction of it.
        return ConversationState(
            self.flow_id,
            self.flow_hash,
            self.status,
            self.current,
            dict(self.answers),
            list(self.skipped),
            dict(self.tags),
            dict(self.profile),
            self.steps_taken,
            self.response,
        )

    def forget_answers(self) -> None:
        """Drop everything answered (anonymous flows, once the conversation has closed) —
        and what the path through the flow says about it: how many steps it took."""
        self.answers = {}
        self.skipped = []
        self.tags = {}
        self.profile = {}
        self.response = None
        self.steps_taken = 0
