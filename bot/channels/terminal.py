"""``parley chat``: the terminal channel, driven by the same service the web and Slack use.

Prompts run outside the event loop (one ``asyncio.Runner`` per session, input between calls),
so Ctrl-C simply stops the process; every answer was saved when it was accepted, so the next
``parley chat`` resumes at the open question.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import click

from bot.config import Settings
from bot.engine import Ask, End, Output, Say
from bot.engine.answers import email_problem
from bot.errors import InvalidAnswer, OptedOut
from bot.services.catalog import FlowCatalog
from bot.services.conversations import Surveys
from bot.store.database import open_database

Prompt = Callable[[str], str]
STOP_WORDS = {"/stop"}
OPT_OUT_WORDS = {"/optout", "/opt-out", "/unsubscribe"}
CONSENT_ANSWERS = {"y": True, "yes": True, "n": False, "no": False}


class _Command(Exception):
    def __init__(self, word: str) -> None:
        self.word = word


def chat_loop(
    settings: Settings,
    *,
    flow_id: str,
    respondent_key: str,
    prompt: Prompt = input,
    echo: Callable[[str], None] = click.echo,
    again: str | None = None,
) -> int:
    """Run one flow at the prompt; ``again`` is the command that resumes it (told on pause)."""
    catalog = FlowCatalog(settings.flows)
    catalog.get(flow_id)
    with asyncio.Runner() as runner:
        db = runner.run(
            open_database(settings.db, announce=lambda line: click.echo(line, err=True))
        )
        try:
            surveys = Surveys(db, catalog)
            try:
                reply = runner.run(
                    surveys.start(flow_id=flow_id, respondent_key=respondent_key, channel="cli")
                )
            except OptedOut:
                echo("You opted out of surveys, so Parley will not ask you anything.")
                return 0
            if not reply.created:
                echo("(picking up where you left off — Ctrl-C pauses, /stop ends the survey)")
            else:
                if reply.replaced_expired:
                    echo("(your earlier survey had expired, so this one starts again)")
                echo("(Ctrl-C pauses, /stop ends the survey, /optout stops all surveys)")
            outputs = reply.outputs
            while True:
                show(outputs, echo)
                ask = next((o for o in reversed(outputs) if isinstance(o, Ask)), None)
                if reply.done or ask is None:
                    return 0
                try:
                    value = read_answer(ask, prompt, echo)
                except _Command as cmd:
                    if cmd.word in OPT_OUT_WORDS:
                        runner.run(surveys.opt_out(respondent_key=respondent_key, source="cli"))
                        echo("Done — you will not be surveyed again.")
                        return 0
                    reply = runner.run(
                        surveys.stop(
                            conversation_id=reply.conversation_id, respondent_key=respondent_key
                        )
                    )
                    outputs = reply.outputs
                    continue
                except EOFError:
                    echo(
                        f"\nPaused. Run `{again or f'parley chat {flow_id}'}` to pick up where "
                        "you left off."
                    )
                    return 0
                try:
                    reply = runner.run(
                        surveys.answer(
                            conversation_id=reply.conversation_id,
                            respondent_key=respondent_key,
                            step=ask.step,
                            value=value,
                        )
                    )
                    outputs = reply.outputs
                except InvalidAnswer as err:
                    choices = ask.input.choices
                    numbers = f" (type their numbers, 1–{len(choices)})" if choices else ""
                    echo(f"  ! {err.message}{numbers}")
                    outputs = [ask]
        finally:
            runner.run(db.dispose())


def show(outputs: list[Output], echo: Callable[[str], None]) -> None:
    for output in outputs:
        if isinstance(output, Say):
            echo(output.text)
        elif isinstance(output, Ask):
            echo("")
            echo(output.text)
            if output.help:
                echo(f"  {output.help}")
            for line in describe_input(output):
                echo(f"  {line}")
        elif isinstance(output, End):
            if output.text:
                echo(output.text)
            elif output.reason == "completed":
                echo("That's everything — thank you!")
            elif output.reason == "expired":
                echo("This survey has expired.")


def describe_input(ask: Ask) -> list[str]:
    spec = ask.input
    lines: list[str] = []
    if spec.min is not None and spec.max is not None:
        low, high = spec.labels or (None, None)
        ends = f"  ({spec.min} = {low}, {spec.max} = {high})" if low and high else ""
        lines.append(f"{spec.min}–{spec.max}{ends}")
    elif spec.choices:
        for i, choice in enumerate(spec.choices, 1):
            lines.append(f"{i}. {choice.label}")
        if spec.kind == "multi_choice":
            low, high = spec.min_picks, spec.max_picks
            how_many = f"{low}" if low == high else f"{low} to {high}"
            lines.append(f"(pick {how_many} of them: their numbers, separated by commas)")
    elif spec.kind == "yes_no":
        lines.append("(yes / no)")
    elif spec.kind == "text" and spec.max_length:
        lines.append(f"(up to {spec.max_length} characters)")
    if not spec.required:  # an email address is always optional
        lines.append("(press Enter to skip)")
    return lines


def read_answer(ask: Ask, prompt: Prompt, echo: Callable[[str], None]) -> Any:
    raw = prompt("> ")
    word = raw.strip().lower()
    if word in STOP_WORDS | OPT_OUT_WORDS:
        raise _Command(word)
    if ask.input.kind != "email":
        return raw
    if not raw.strip():
        return None
    problem = email_problem(raw)
    if problem is not None:  # say so now, not after asking for consent to a typo
        echo(problem)
        return read_answer(ask, prompt, echo)
    while True:  # the consent is a question of its own: commands work, and only yes or no
        consent = prompt(f"{ask.input.consent} (yes / no) > ").strip().lower()
        if consent in STOP_WORDS | OPT_OUT_WORDS:
            raise _Command(consent)
        if consent in CONSENT_ANSWERS:
            return {"email": raw.strip(), "consent": CONSENT_ANSWERS[consent]}
        echo("  ! Please answer yes or no.")
