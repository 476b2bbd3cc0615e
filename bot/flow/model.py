"""The typed, compiled flow the engine runs: validated specs plus pre-parsed expressions."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property
from typing import Any

from bot.flow.conditions import Node
from bot.flow.schema import Choice, StepModel, Trigger
from bot.flow.template import Template

SCALE_RANGES = {"nps": (0, 10), "csat": (1, 5), "ces": (1, 7)}
DEFAULT_LABELS = {
    "nps": ("Not at all likely", "Extremely likely"),
    "csat": ("Very dissatisfied", "Very satisfied"),
    "ces": ("Very difficult", "Very easy"),
    "rating": (None, None),
}
SCALE_TYPES = frozenset({"nps", "csat", "ces", "rating"})
CHOICE_TYPES = frozenset({"choice", "multi_choice"})


@dataclass(frozen=True)
class TagRule:
    when: Node | None
    weights: dict[str, float]


@dataclass(frozen=True)
class Step:
    spec: StepModel
    when: Node | None
    text: Template
    help: Template | None
    tag_rules: tuple[TagRule, ...]
    choice_labels: tuple[Template, ...] = ()

    # cached: the engine asks these of a step many times per answer, and each was a walk
    # into the pydantic spec (a frozen step never changes)
    @cached_property
    def id(self) -> str:
        return self.spec.id

    @cached_property
    def type(self) -> str:
        return self.spec.type

    @cached_property
    def asks(self) -> bool:
        """Whether the step waits for an answer (everything but ``message``)."""
        return self.spec.type != "message"

    @cached_property
    def bounds(self) -> tuple[int, int] | None:
        if self.type in SCALE_RANGES:
            return SCALE_RANGES[self.type]
        if self.type == "rating":
            return (self.spec.min, self.spec.max)  # type: ignore[union-attr]
        return None

    @cached_property
    def end_labels(self) -> tuple[str | None, str | None]:
        if self.type not in SCALE_TYPES:
            return (None, None)
        default_low, default_high = DEFAULT_LABELS[self.type]
        labels = self.spec.labels  # type: ignore[union-attr]
        return (labels.min or default_low, labels.max or default_high)

    @cached_property
    def choices(self) -> tuple[Choice, ...]:
        """Empty for a step without choices (asked on every answer: kept, not looked up)."""
        return tuple(getattr(self.spec, "choices", ()))

    def choice(self, value: str) -> Choice | None:
        return next((c for c in self.choices if c.value == value), None)


@dataclass(frozen=True)
class Flow:
    id: str
    kind: str
    title: str
    trigger: Trigger
    intro: Template | None
    outro: Template | None
    expires_after: int | None
    anonymous: bool
    steps: tuple[Step, ...]
    hash: str
    definition: dict[str, Any] = field(repr=False, compare=False)
    source: str = ""  # how messages name the file (relative)
    path: str = ""  # the file itself (absolute), for its modification time
    _index: dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._index.update({s.id: i for i, s in enumerate(self.steps)})

    @cached_property
    def lifetime(self) -> timedelta | None:
        """``expires_after`` as a duration (None: never expires)."""
        return timedelta(seconds=self.expires_after) if self.expires_after is not None else None

    def index(self, step_id: str) -> int:
        return self._index[step_id]

    def step(self, step_id: str) -> Step:
        return self.steps[self._index[step_id]]

    def has_step(self, step_id: str) -> bool:
        return step_id in self._index

    @property
    def question_count(self) -> int:
        return sum(1 for s in self.steps if s.asks)
