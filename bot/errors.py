"""Parley's exception tree.

Every error a user can see derives from :class:`ParleyError` and carries a message that says
what is wrong and what to do about it. Third-party errors (YAML, pydantic, SQLAlchemy) are
translated at the boundary with ``raise ... from err`` so callers only ever catch ours::

    ParleyError
    ├── ConfigError                 bad setting or env var
    ├── FlowError                   one or more problems in flow files (file:line:col)
    ├── FlowNotFound                no flow with that id
    ├── ConversationError
    │   ├── ConversationNotFound
    │   ├── NotYourConversation     answered/read by someone else
    │   ├── NotCurrentStep          step already passed or not reached yet
    │   ├── ConversationClosed      finished, stopped or expired
    │   └── InvalidAnswer           value does not fit the step; carries the re-ask
    ├── OptedOut                    the respondent asked never to be surveyed again
    ├── RecentlySurveyed            the frequency cap: asked too recently
    ├── Busy                        kept colliding with other requests: try again shortly
    ├── RespondentNotFound
    └── DatabaseError
        └── DatabaseNeedsUpgrade    schema older than this Parley: run `parley db upgrade`
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


class ParleyError(Exception):
    """Root of every error Parley raises on purpose."""

    code = "parley_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(ParleyError):
    code = "config_error"


@dataclass(frozen=True)
class Problem:
    """One problem in a flow file, located so an editor can jump to it."""

    file: str
    line: int
    col: int
    message: str
    hint: str = ""

    def __str__(self) -> str:
        hint = f" ({self.hint})" if self.hint else ""
        return f"{self.file}:{self.line}:{self.col}: {self.message}{hint}"


class FlowError(ParleyError):
    """A flow file (or a file it includes) cannot be used; lists every problem found."""

    code = "flow_error"

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class FlowNotFound(ParleyError):
    code = "unknown_flow"


class ConversationError(ParleyError):
    code = "conversation_error"


class ConversationNotFound(ConversationError):
    code = "conversation_not_found"


class NotYourConversation(ConversationError):
    code = "forbidden"


class NotCurrentStep(ConversationError):
    code = "not_current_step"


class ConversationClosed(ConversationError):
    code = "conversation_closed"


class InvalidAnswer(ConversationError):
    """The value does not fit the step; ``outputs`` is the re-ask to show the respondent."""

    code = "invalid_answer"

    def __init__(self, message: str, *, step: str, outputs: list[Any] | None = None) -> None:
        super().__init__(message)
        self.step = step
        self.outputs = outputs or []


class OptedOut(ParleyError):
    code = "opted_out"


class RecentlySurveyed(ParleyError):
    """The frequency cap: this person was asked to take a survey within the recontact window."""

    code = "recently_surveyed"

    def __init__(self, message: str, *, until: datetime) -> None:
        super().__init__(message)
        self.until = until


class Busy(ParleyError):
    """Other requests kept changing the same person or conversation while this one tried,
    several times over: nothing was stored, and trying again shortly will work."""

    code = "busy"


class RespondentNotFound(ParleyError):
    code = "respondent_not_found"


class DatabaseError(ParleyError):
    code = "database_error"


class DatabaseNeedsUpgrade(DatabaseError):
    code = "database_needs_upgrade"
