"""The pure conversation engine: ``advance(flow, state, event) -> Outcome``. No I/O."""

from bot.engine.advance import Outcome, advance, ask_for, choice_labels, new_state, resume
from bot.engine.messages import (
    Answer,
    Ask,
    End,
    Event,
    InputSpec,
    Output,
    Recorded,
    Say,
    Start,
    Stop,
    Timeout,
)
from bot.engine.state import ConversationState

__all__ = [
    "Answer",
    "Ask",
    "ConversationState",
    "End",
    "Event",
    "InputSpec",
    "Outcome",
    "Output",
    "Recorded",
    "Say",
    "Start",
    "Stop",
    "Timeout",
    "advance",
    "ask_for",
    "choice_labels",
    "new_state",
    "resume",
]
