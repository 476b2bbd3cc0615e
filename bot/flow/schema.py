"""Pydantic models that mirror the YAML of a flow, one model per step type.

These are stage one of loading (shape and types, with human errors); the loader then adds
the semantic checks pydantic cannot know (ids, references, reachability). ``extra="forbid"``
everywhere, so a typo is an error with a "did you mean", never an ignored key.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bot.flow.durations import parse_duration

STEP_ID = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
TAG = re.compile(r"^[a-z][a-z0-9_-]{0,40}:[a-z0-9][a-z0-9_-]{0,60}$")
VALUE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
MAX_TEXT = 3000
MAX_STEPS = 200
MAX_CHOICES = 100

Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT)]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


TAG_HINT = "a tag is dimension:segment in lower case, e.g. needs:price"


def tag_weights(value: object) -> dict[str, float]:
    """``tag``, ``[tag, ...]`` or ``{tag: weight}`` → ``{tag: weight}``, with one clear error."""
    if isinstance(value, str):
        pairs: list[tuple[object, object]] = [(value, 1.0)]
    elif isinstance(value, list):
        pairs = [(item, 1.0) for item in value]
    elif isinstance(value, dict):
        pairs = list(value.items())
    else:
        raise ValueError(f"write a tag, a list of tags or {{tag: weight}} ({TAG_HINT})")
    weights: dict[str, float] = {}
    for tag, weight in pairs:
        if not isinstance(tag, str) or not TAG.match(tag):
            raise ValueError(f"{tag!r} is not a tag ({TAG_HINT})")
        if (
            isinstance(weight, bool)
            or not isinstance(weight, int | float)
            or not -100 <= weight <= 100
        ):
            raise ValueError(
                f"the weight of {tag} must be a number from -100 to 100, not {weight!r}"
            )
        weights[tag] = float(weight)
    return weights


class TagRule(Model):
    """``{when: "score >= 9", add: nps:promoter}`` or ``add: {needs:price: 2}``."""

    when: str | None = None
    add: dict[str, float]

    @field_validator("add", mode="before")
    @classmethod
    def _tags(cls, value: object) -> dict[str, float]:
        return tag_weights(value)

    @property
    def weights(self) -> dict[str, float]:
        return dict(self.add)


class Choice(Model):
    value: Annotated[str, Field(pattern=VALUE.pattern)]
    label: Text
    tags: dict[str, float] = Field(default_factory=dict)

    @field_validator("value", mode="before")
    @classmethod
    def _value_text(cls, v: object) -> object:
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("tags", mode="before")
    @classmethod
    def _tags(cls, value: object) -> dict[str, float]:
        return tag_weights(value)

    @property
    def weights(self) -> dict[str, float]:
        return dict(self.tags)


class ScaleLabels(Model):
    min: Text | None = None
    max: Text | None = None


class StepBase(Model):
    id: Annotated[str, Field(pattern=STEP_ID.pattern)]
    text: Text
    help: Text | None = None
    when: str | None = None
    required: bool = True
    tags: list[TagRule] = Field(default_factory=list)
    save_as: Annotated[str, Field(pattern=STEP_ID.pattern)] | None = None


class ScaleStep(StepBase):
    labels: ScaleLabels = ScaleLabels()


class NpsStep(ScaleStep):
    type: Literal["nps"]


class CsatStep(ScaleStep):
    type: Literal["csat"]


class CesStep(ScaleStep):
    type: Literal["ces"]


class RatingStep(ScaleStep):
    type: Literal["rating"]
    min: int = Field(default=1, ge=0, le=100)
    max: int = Field(default=5, ge=1, le=100)

    @model_validator(mode="after")
    def _range(self) -> RatingStep:
        if self.max <= self.min:
            raise ValueError(f"max ({self.max}) must be greater than min ({self.min})")
        if self.max - self.min > 20:
            raise ValueError("a rating scale has at most 21 points")
        return self


class ChoiceStep(StepBase):
    type: Literal["choice"]
    choices: Annotated[list[Choice], Field(min_length=1, max_length=MAX_CHOICES)]


class MultiChoiceStep(StepBase):
    type: Literal["multi_choice"]
    choices: Annotated[list[Choice], Field(min_length=1, max_length=MAX_CHOICES)]
    min_picks: int = Field(default=1, ge=0)
    max_picks: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _picks(self) -> MultiChoiceStep:
        top = self.max_picks if self.max_picks is not None else len(self.choices)
        if top > len(self.choices):
            raise ValueError(f"max_picks ({top}) is more than the {len(self.choices)} choices")
        if self.min_picks > top:
            raise ValueError(f"min_picks ({self.min_picks}) is more than max_picks ({top})")
        return self


class TextStep(StepBase):
    type: Literal["text"]
    max_length: int = Field(default=2000, ge=1, le=10000)
    placeholder: Text | None = None


class YesNoStep(StepBase):
    type: Literal["yes_no"]


class EmailStep(StepBase):
    type: Literal["email"]
    consent: Text


class MessageStep(StepBase):
    type: Literal["message"]
    end: bool = False


StepModel = Annotated[
    NpsStep
    | CsatStep
    | CesStep
    | RatingStep
    | ChoiceStep
    | MultiChoiceStep
    | TextStep
    | YesNoStep
    | EmailStep
    | MessageStep,
    Field(discriminator="type"),
]
STEP_TYPES = (
    "nps",
    "csat",
    "ces",
    "rating",
    "choice",
    "multi_choice",
    "text",
    "yes_no",
    "email",
    "message",
)


class Trigger(Model):
    campaign: bool | None = None
    event: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_.-]{0,62}$")] | None = None
    first_contact: bool | None = None

    @model_validator(mode="after")
    def _one(self) -> Trigger:
        set_keys = [
            k
            for k in ("campaign", "event", "first_contact")
            if getattr(self, k) not in (None, False)
        ]
        if len(set_keys) != 1:
            raise ValueError(
                "a trigger has exactly one of campaign: true, event: NAME, first_contact: true"
            )
        return self


class FlowMeta(Model):
    """Everything in a flow file except its steps (validated one by one, for positions)."""

    id: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$")]
    kind: Literal["welcome", "microsurvey", "churn", "interview"]
    title: Text
    description: Text | None = None
    trigger: Trigger = Trigger(campaign=True)
    intro: Text | None = None
    outro: Text | None = None
    expires_after: str | None = None
    anonymous: bool = False
    steps: list[object] = Field(min_length=1, max_length=MAX_STEPS)

    @field_validator("expires_after")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)  # ValueError says which forms are accepted
        return value


class BlockFile(Model):
    """A file in ``flows/blocks/``: reusable steps pulled in with ``include:``."""

    description: Text | None = None
    steps: list[object] = Field(min_length=1, max_length=MAX_STEPS)


# --- reserved config files -------------------------------------------------------------


class SegmentDimension(Model):
    description: Text | None = None
    segments: Annotated[list[Annotated[str, Field(pattern=VALUE.pattern)]], Field(min_length=1)]
    keywords: dict[str, list[Annotated[str, Field(min_length=1, max_length=80)]]] = Field(
        default_factory=dict
    )

    @model_validator(mode="after")
    def _known(self) -> SegmentDimension:
        unknown = sorted(set(self.keywords) - set(self.segments))
        if unknown:
            raise ValueError(
                f"keywords for unknown segment(s) {', '.join(unknown)}; segments are {', '.join(self.segments)}"
            )
        return self


class SegmentsFile(Model):
    dimensions: dict[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,40}$")], SegmentDimension]


class PersonaAssumption(Model):
    segment: Text
    claim: Text | None = None


class Persona(Model):
    id: Annotated[str, Field(pattern=VALUE.pattern)]
    name: Text
    description: Text | None = None
    assumptions: list[PersonaAssumption] = Field(default_factory=list)


class PersonasFile(Model):
    personas: list[Persona] = Field(default_factory=list)


class Theme(Model):
    label: Text | None = None
    synonyms: list[Annotated[str, Field(min_length=1, max_length=80)]] = Field(default_factory=list)


class ThemesFile(Model):
    themes: dict[Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9 _-]{0,60}$")], Theme] = Field(
        default_factory=dict
    )
    stopwords: list[str] = Field(default_factory=list)


CONFIG_FILES: dict[str, type[Model]] = {
    "segments.yml": SegmentsFile,
    "personas.yml": PersonasFile,
    "themes.yml": ThemesFile,
}
