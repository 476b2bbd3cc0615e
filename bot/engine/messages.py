"""Channel-neutral events in and outputs out of the engine.

Channels translate their payloads into these events and render these outputs as HTML, JSON
or Block Kit; the engine never learns which channel it is talking to.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class Start:
    """Begin the flow, or re-show the current question when it is already under way."""


@dataclass(frozen=True)
class Answer:
    step: str
    value: Any


@dataclass(frozen=True)
class Stop:
    """The respondent ended the survey on purpose (not a pause: closing the tab is a pause)."""


@dataclass(frozen=True)
class Timeout:
    """The flow's ``expires_after`` passed before it was finished."""


Event = Start | Answer | Stop | Timeout


@dataclass(frozen=True)
class ChoiceOption:
    value: str
    label: str


@dataclass(frozen=True)
class InputSpec:
    """What an answer must look like; channels turn this into buttons, boxes or prompts."""

    kind: str
    required: bool = True
    min: int | None = None
    max: int | None = None
    labels: tuple[str | None, str | None] | None = None
    choices: tuple[ChoiceOption, ...] | None = None
    min_picks: int | None = None
    max_picks: int | None = None
    max_length: int | None = None
    consent: str | None = None
    placeholder: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in vars(self).items() if v is not None}
        if self.labels is not None:
            data["labels"] = list(self.labels)
        if self.choices is not None:
            data["choices"] = [{"value": c.value, "label": c.label} for c in self.choices]
        return data


@dataclass(frozen=True)
class Say:
    text: str
    type: Literal["say"] = "say"

    def to_dict(self) -> dict[str, Any]:
        return {"type": "say", "text": self.text}


@dataclass(frozen=True)
class Ask:
    step: str
    text: str
    input: InputSpec
    help: str | None = None
    type: Literal["ask"] = "ask"

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "type": "ask",
            "step": self.step,
            "text": self.text,
            "input": self.input.to_dict(),
        }
        if self.help:
            data["help"] = self.help
        return data


@dataclass(frozen=True)
class End:
    reason: Literal["completed", "stopped", "expired", "opted_out"]
    text: str | None = None
    type: Literal["end"] = "end"

    def to_dict(self) -> dict[str, Any]:
        return {"type": "end", "text": self.text or "", "reason": self.reason}


Output = Say | Ask | End


@dataclass(frozen=True)
class Recorded:
    """An accepted answer: what the service stores (``value`` None = skipped or declined)."""

    step: str
    value: Any
    tags: dict[str, float] = field(default_factory=dict)
    profile: dict[str, Any] = field(default_factory=dict)
