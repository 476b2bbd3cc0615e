"""The pure conversation engine: ``advance(flow, state, event) -> Outcome``. No I/O."""

from bot.engine.advance import (
    Outcome,
    accept,
    advance,
    ask_for,
    choice_labels,
    lead_in,
    new_state,
    resume,
    shown_choices,
)
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
    "accept",
    "advance",
    "ask_for",
    "choice_labels",
    "lead_in",
    "new_state",
    "resume",
    "shown_choices",
]
