"""The conversation engine: a pure function from (flow, state, event) to (outputs, state).

No I/O and no clock: the service layer loads state, calls :func:`advance`, and saves the
result in one transaction. Because it is pure it is trivially testable and costs
microseconds per step. A step breaker stops a runaway flow rather than spinning.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bot.engine.answers import Rejected, coerce
from bot.engine.messages import (
    Answer,
    Ask,
    ChoiceOption,
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
from bot.errors import ConversationClosed, NotCurrentStep
from bot.flow import conditions as cond
from bot.flow.model import Flow, Step
from bot.flow.template import Template, plain_text

STOPPED_TEXT = "Okay, I've closed this survey. Thanks for your time."


@dataclass
class Outcome:
    outputs: list[Output]
    state: ConversationState
    recorded: Recorded | None = None
    error: str | None = None
    profile_updates: dict[str, Any] = field(default_factory=dict)


def new_state(flow: Flow, profile: Mapping[str, Any] | None = None) -> ConversationState:
    return ConversationState(flow_id=flow.id, flow_hash=flow.hash, profile=dict(profile or {}))


def advance(flow: Flow, state: ConversationState, event: Event) -> Outcome:
    """Apply one event; never mutates ``state``."""
    state = state.copy()
    if isinstance(event, Start):
        if state.status == "new":
            state.status = "active"
            intro = [Say(_render(flow, flow.intro, state))] if flow.intro else []
            outcome = _run_from(flow, state, 0)
            outcome.outputs[:0] = intro
            return outcome
        return Outcome(resume(flow, state), state)
    if not state.is_open:
        raise ConversationClosed(f"this {flow.title!r} conversation is already {state.status}")
    if isinstance(event, Stop):
        state.status = "stopped"
        state.current = None
        return Outcome([End("stopped", STOPPED_TEXT)], state)
    if isinstance(event, Timeout):
        state.status = "expired"
        state.current = None
        return Outcome([End("expired")], state)
    return _answer(flow, state, event)


def _answer(flow: Flow, state: ConversationState, event: Answer) -> Outcome:
    if state.current != event.step:
        if event.step in state.answers:
            raise NotCurrentStep(f"step '{event.step}' was already answered")
        raise NotCurrentStep(
            f"step '{event.step}' is not the current question (that is '{state.current}')"
        )
    step = flow.step(event.step)
    try:
        value = accept(flow, step, event.value, state)
    except Rejected as err:
        return Outcome([Say(str(err)), ask_for(flow, step, state)], state, error=str(err))
    state.answers[step.id] = value
    tags = _tags(step, value, state)
    for tag, weight in tags.items():
        state.tags[tag] = state.tags.get(tag, 0.0) + weight
    profile: dict[str, Any] = {}
    if step.spec.save_as and value is not None:
        profile[step.spec.save_as] = value
        state.profile.update(profile)
    outcome = _run_from(flow, state, flow.index(step.id) + 1)
    outcome.recorded = Recorded(step.id, value, tags, profile)
    outcome.profile_updates = profile
    return outcome


def _tags(step: Step, value: Any, state: ConversationState) -> dict[str, float]:
    tags: dict[str, float] = {}
    if value is None:
        return tags
    picked = value if isinstance(value, list) else [value] if step.type == "choice" else []
    for choice_value in picked:
        choice = step.choice(choice_value)
        if choice is not None:
            for tag, weight in choice.weights.items():
                tags[tag] = tags.get(tag, 0.0) + weight
    resolve = cond.truthy_in(state.answers, state.profile)
    for rule in step.tag_rules:
        if rule.when is None or cond.evaluate(rule.when, resolve):
            for tag, weight in rule.weights.items():
                tags[tag] = tags.get(tag, 0.0) + weight
    return tags


def _run_from(flow: Flow, state: ConversationState, start: int) -> Outcome:
    outputs: list[Output] = []
    resolve = cond.truthy_in(state.answers, state.profile)
    for step in flow.steps[start:]:  # forward only: every event ends within the flow
        state.steps_taken += 1
        if step.when is not None and not cond.evaluate(step.when, resolve):
            state.skipped.append(step.id)
            continue
        if not step.asks:
            text = _render(flow, step.text, state)
            if step.spec.end:  # type: ignore[union-attr]
                return _finish(state, outputs, text)  # its words are the closing ones
            outputs.append(Say(text))
            continue
        state.current = step.id
        outputs.append(ask_for(flow, step, state))
        return Outcome(outputs, state)
    return _finish(state, outputs, _render(flow, flow.outro, state) if flow.outro else None)


def _finish(state: ConversationState, outputs: list[Output], closing: str | None) -> Outcome:
    """Closing words ride on the End, so a channel says them once, or its own thanks when
    there are none."""
    state.status = "completed"
    state.current = None
    outputs.append(End("completed", closing))
    return Outcome(outputs, state)


def resume(flow: Flow, state: ConversationState) -> list[Output]:
    """What to show someone coming back: the open question, or how it ended."""
    if state.status == "active" and state.current is not None:
        return [ask_for(flow, flow.step(state.current), state)]
    if state.status == "new":
        return []
    reason = state.status if state.status in ("completed", "stopped", "expired") else "completed"
    return [End(reason, closing_text(flow, state) if reason == "completed" else None)]  # type: ignore[arg-type]


def lead_in(flow: Flow, state: ConversationState) -> list[Output]:
    """The words said just before the open question — the intro (before a first question)
    or the message steps since the last question — to deliver them late with it. Conditions
    only name earlier steps, so the answers take the path they took at the time."""
    if state.status != "active" or state.current is None:
        return []
    resolve = cond.truthy_in(state.answers, state.profile)
    said: list[Output] = [Say(_render(flow, flow.intro, state))] if flow.intro else []
    for step in flow.steps:
        if step.id == state.current:
            return said
        if step.when is not None and not cond.evaluate(step.when, resolve):
            continue
        if step.asks:
            said = []  # said before an earlier question, with it
        else:
            said.append(Say(_render(flow, step.text, state)))
    return said


def closing_text(flow: Flow, state: ConversationState) -> str | None:
    """The words a completed conversation ended with, shown again to someone who comes back:
    the first ``end`` step its answers lead to, else the outro. Conditions only name earlier
    steps, so the final answers take the path they took at the time. An anonymous flow has
    forgotten its answers (and which ending they led to would tell them): a generic thanks."""
    if flow.anonymous:
        return None
    resolve = cond.truthy_in(state.answers, state.profile)
    for step in flow.steps:
        if step.asks or not step.spec.end:  # type: ignore[union-attr]
            continue
        if step.when is None or cond.evaluate(step.when, resolve):
            return _render(flow, step.text, state)
    return _render(flow, flow.outro, state) if flow.outro else None


def ask_for(flow: Flow, step: Step, state: ConversationState) -> Ask:
    return Ask(
        step=step.id,
        text=_render(flow, step.text, state),
        help=_render(flow, step.help, state) if step.help else None,
        input=input_spec(step, state, flow),
    )


def input_spec(step: Step, state: ConversationState, flow: Flow) -> InputSpec:
    spec = step.spec
    required = spec.required
    if step.bounds is not None:
        lo, hi = step.bounds
        return InputSpec(step.type, required, min=lo, max=hi, labels=step.end_labels)
    if step.type in ("choice", "multi_choice"):
        options = tuple(
            ChoiceOption(value, label) for value, label in shown_choices(flow, step, state).items()
        )
        if step.type == "choice":
            return InputSpec("choice", required, choices=options)
        top = spec.max_picks or len(options)  # type: ignore[union-attr]
        return InputSpec(
            "multi_choice", required, choices=options, min_picks=spec.min_picks, max_picks=top
        )  # type: ignore[union-attr]
    if step.type == "text":
        return InputSpec("text", required, max_length=spec.max_length, placeholder=spec.placeholder)  # type: ignore[union-attr]
    if step.type == "email":
        return InputSpec("email", False, consent=spec.consent)  # type: ignore[union-attr]
    return InputSpec(step.type, required)


def accept(flow: Flow, step: Step, value: Any, state: ConversationState) -> Any:
    """``coerce`` for this person: a typed choice label is matched as they were shown it."""
    return coerce(step, value, choice_labels(flow, step, state) if step.choices else None)


def shown_choices(flow: Flow, step: Step, state: ConversationState | None = None) -> dict[str, str]:
    """Choice value → label as shown (see ``choice_labels``), in the flow's order."""
    return dict(zip((c.value for c in step.choices), choice_labels(flow, step, state), strict=True))


def choice_labels(
    flow: Flow, step: Step, state: ConversationState | None = None
) -> tuple[str, ...]:
    """The choices' labels as shown (labels may pipe earlier answers). Without a state, as
    shown to someone with no answers and no profile: for results across everyone."""
    state = state or ConversationState(flow.id, flow.hash)
    return tuple(_render(flow, label, state) for label in step.choice_labels)


def _render(flow: Flow, template: Template | None, state: ConversationState) -> str:
    if template is None:
        return ""
    if template.is_plain:
        return template.source

    def display(name: cond.Name, value: Any) -> str:
        if name.parts[0] != "respondent" and flow.has_step(name.parts[0]):
            step = flow.step(name.parts[0])
            if step.type in ("choice", "multi_choice") and value is not None:
                values = value if isinstance(value, list) else [value]
                shown = shown_choices(flow, step, state)
                return ", ".join(shown[v] for v in values if v in shown)
        return plain_text(value)

    return template.render(cond.truthy_in(state.answers, state.profile), display)
