"""Results of one flow: response and completion counts, scale scores, top choices, recent
open answers. Shared by ``parley results``, ``/survey results`` and the web API, so every
surface shows the same numbers.
"""

from __future__ import annotations

from collections import Counter, defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from analysis.scores import ScaleSummary, bar, summarise_scale
from bot.engine import shown_choices
from bot.flow import Flow
from bot.flow.model import SCALE_TYPES
from bot.services.anonymous import waiting_note
from bot.services.export import utc_iso
from bot.store import repo
from bot.store.database import Database

RECENT_TEXTS = 5
TOP_CHOICES = 10


@dataclass
class StepResult:
    id: str
    type: str
    text: str
    answers: int = 0
    scale: ScaleSummary | None = None
    choices: list[tuple[str, str, int]] = field(default_factory=list)  # value, label, count
    yes: int = 0
    no: int = 0
    recent: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "type": self.type,
            "text": self.text,
            "answers": self.answers,
        }
        if self.scale is not None:
            data["scale"] = self.scale.to_dict()
        if self.type in ("choice", "multi_choice"):
            data["choices"] = [
                {"value": v, "label": label, "count": n} for v, label, n in self.choices
            ]
        if self.type == "yes_no":
            data["yes"], data["no"] = self.yes, self.no
        if self.type == "text":
            data["recent"] = self.recent
        return data


@dataclass
class FlowResults:
    flow_id: str
    title: str
    started: int
    completed: int
    open: int
    steps: list[StepResult]
    # the rest of the responses: stopped (by the person, or by opting out) or expired
    stopped: int = 0
    expired: int = 0
    retired: int = 0  # answers to steps an edit removed or retyped since (export has them)
    # responses by channel: a flow open to anyone on the web can be filled by a script, and
    # researchers should see where its numbers come from
    channels: dict[str, int] = field(default_factory=dict)
    # anonymous responses whose answers are not counted yet: they join in batches
    waiting: int = 0

    @property
    def completion_rate(self) -> float | None:
        return round(100 * self.completed / self.started, 1) if self.started else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "flow": self.flow_id,
            "title": self.title,
            "responses": self.started,
            "completed": self.completed,
            "open": self.open,
            "stopped": self.stopped,
            "expired": self.expired,
            "completion_rate": self.completion_rate,
            "steps": [s.to_dict() for s in self.steps],
            "answers_to_retired_steps": self.retired,
            "anonymous_responses_waiting": self.waiting,
            "responses_by_channel": dict(self.channels),
        }

    @property
    def lead_step(self) -> StepResult | None:
        """The question a summary leads with: the first with a score (NPS, CSAT, CES), else
        the first scale anyone answered."""
        scales = [s for s in self.steps if s.scale is not None and s.scale.count]
        scored = [s for s in scales if s.scale is not None and s.scale.score is not None]
        return (scored or scales or [None])[0]

    @property
    def headline(self) -> str:
        """One line for Slack and dashboards: responses, completion, the lead score."""
        parts = [
            counted(self.started, "response"),
            f"{percent(self.completion_rate or 0)} completed",
        ]
        lead = self.lead_step
        if lead is not None and lead.scale is not None and lead.scale.score is not None:
            parts.append(f"{lead.scale.score_name} {score_text(lead.type, lead.scale.score)}")
        return " · ".join(parts)


def counted(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def percent(rate: float) -> str:
    return f"{rate:g}%"


def score_text(step_type: str, score: float) -> str:
    """NPS runs from -100 to +100, so it always shows its sign; CSAT and CES are shares."""
    return f"{score:+g}" if step_type == "nps" else f"{score:g}%"


async def flow_results(
    db: Database, flow: Flow, *, on_answer: Callable[[], None] | None = None
) -> FlowResults:
    """Aggregate every stored answer of the flow's current steps, from all versions,
    streaming in batches. Answers to a step that an edit removed or retyped cannot be put
    beside the current ones: they are counted apart (``parley export`` has them)."""
    steps = {s.id: StepResult(s.id, s.type, s.text.source) for s in flow.steps if s.asks}
    bounds = {s.id: s.bounds for s in flow.steps if s.bounds is not None}
    scale_values: dict[str, list[int]] = defaultdict(list)
    choice_counts: dict[str, Counter[str]] = defaultdict(Counter)
    recent: dict[str, deque[dict[str, Any]]] = defaultdict(lambda: deque(maxlen=RECENT_TEXTS))
    retired = 0
    async with db.reads() as session:
        counts, channels = await repo.conversation_counts(session, flow_id=flow.id)
        waiting = await repo.anonymous_waiting(session, flow_id=flow.id) if flow.anonymous else 0
        async for answer, key, _version in repo.flow_answers(session, flow_id=flow.id):
            if on_answer is not None:
                on_answer()  # progress, for a long count in a terminal
            result = steps.get(answer.step_id)
            value = answer.value
            low, high = bounds.get(answer.step_id, (None, None))
            if (
                result is None
                or answer.step_type != result.type
                or (low is not None and isinstance(value, int) and not low <= value <= high)
            ):
                retired += 1  # the step was removed, retyped or its scale narrowed since
                continue
            result.answers += 1
            if result.type in SCALE_TYPES and isinstance(value, int):
                scale_values[answer.step_id].append(value)
            elif result.type == "choice" and isinstance(value, str):
                choice_counts[answer.step_id][value] += 1
            elif result.type == "multi_choice" and isinstance(value, list):
                choice_counts[answer.step_id].update(v for v in value if isinstance(v, str))
            elif result.type == "yes_no" and isinstance(value, bool):
                result.yes += value
                result.no += not value
            elif result.type == "text" and isinstance(value, str):
                recent[answer.step_id].append(
                    {"text": value, "at": utc_iso(answer.created_at), "respondent": key}
                )
    for step in flow.steps:
        result = steps.get(step.id)
        if result is None:
            continue
        if step.bounds is not None:
            result.scale = summarise_scale(step.type, scale_values[step.id], *step.bounds)
        if step.type in ("choice", "multi_choice"):
            labels = shown_choices(flow, step)
            result.choices = [
                (v, labels.get(v, v), n) for v, n in choice_counts[step.id].most_common(TOP_CHOICES)
            ]
        if step.type == "text":
            result.recent = list(reversed(recent[step.id]))
    started = sum(counts.values())
    return FlowResults(
        flow.id,
        flow.title,
        started=started,
        completed=counts.get("completed", 0),
        open=counts.get("active", 0) + counts.get("new", 0),
        stopped=counts.get("stopped", 0),
        expired=counts.get("expired", 0),
        steps=list(steps.values()),
        retired=retired,
        channels=dict(sorted(channels.items(), key=lambda item: -item[1])),
        waiting=waiting,
    )


def render_text(results: FlowResults) -> str:
    """Plain-text report with bar charts, for terminals and Slack code blocks."""
    rate = percent(results.completion_rate) if results.completion_rate is not None else "n/a"
    lines = [
        f"{results.title} ({results.flow_id})",
        f"responses: {results.started}   completed: {results.completed}   open: {results.open}"
        + (f"   stopped: {results.stopped}" if results.stopped else "")
        + (f"   expired: {results.expired}" if results.expired else "")
        + f"   completion rate: {rate}",
    ]
    if results.channels:
        lines.append("by channel: " + "   ".join(f"{c} {n}" for c, n in results.channels.items()))
    if results.waiting:
        lines.append(waiting_note(results.waiting))
    for step in results.steps:
        lines.append("")
        lines.append(f"[{step.id}] {step.text}  ({counted(step.answers, 'answer')})")
        if step.scale is not None:
            scale = step.scale
            if scale.score is not None:
                groups = ", ".join(f"{k} {v}" for k, v in scale.groups.items())
                lines.append(
                    f"  {scale.score_name}: {score_text(step.type, scale.score)}   "
                    f"mean {scale.mean}   ({groups})"
                )
            elif scale.mean is not None:
                lines.append(f"  mean {scale.mean}")
            biggest = max(scale.distribution.values(), default=0)
            for point, n in scale.distribution.items():
                lines.append(f"  {point:>3} {bar(n, biggest):<30} {n}")
        elif step.type in ("choice", "multi_choice"):
            biggest = max((n for _, _, n in step.choices), default=0)
            for _value, label, n in step.choices:
                lines.append(f"  {label[:40]:<40} {bar(n, biggest, 20):<20} {n}")
        elif step.type == "yes_no":
            lines.append(f"  yes {step.yes}   no {step.no}")
        elif step.type == "text":
            for item in step.recent:
                text = item["text"].replace("\n", " ")
                lines.append(f"  “{text[:100]}{'…' if len(text) > 100 else ''}”")
    if results.retired:
        lines += [
            "",
            f"{counted(results.retired, 'answer')} to steps no longer in this flow (edited since): "
            "see `parley export`",
        ]
    return "\n".join(lines)
