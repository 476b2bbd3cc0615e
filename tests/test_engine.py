"""The pure engine: every step type, skip logic, piping, tags, save_as, consent, stop/timeout."""

from __future__ import annotations

import dataclasses
import textwrap
import unicodedata
from pathlib import Path
from typing import Any

import pytest

from bot.engine import (
    Answer,
    Ask,
    ConversationState,
    End,
    Say,
    Start,
    Stop,
    Timeout,
    advance,
    ask_for,
    choice_labels,
    lead_in,
    new_state,
    resume,
)
from bot.engine.answers import _DROPPED
from bot.errors import ConversationClosed, NotCurrentStep
from bot.flow import Flow, load_flow

ALL_TYPES = """
id: all
kind: microsurvey
title: Every type
intro: Hi {{respondent.first_name or "there"}}!
steps:
  - id: hello
    type: message
    text: A few questions.
  - id: score
    type: nps
    text: Recommend us?
    tags:
      - {when: "score >= 9", add: nps:promoter}
      - {when: "score <= 6", add: {nps:detractor: 2}}
  - id: sat
    type: csat
    text: Satisfied?
  - id: effort
    type: ces
    text: Easy?
  - id: stars
    type: rating
    text: Stars?
    min: 1
    max: 10
    labels: {min: Awful, max: Superb}
  - id: value
    type: choice
    text: What matters most?
    save_as: priority
    choices:
      - {value: price, label: The lowest price, tags: {needs:price: 2}}
      - {value: quality, label: The best quality, tags: [needs:quality]}
  - id: tools
    type: multi_choice
    text: Which tools, {{respondent.first_name or "friend"}}?
    min_picks: 1
    max_picks: 2
    choices:
      - {value: slack, label: Slack}
      - {value: jira, label: Jira}
      - {value: figma, label: Figma}
  - id: why
    type: text
    text: You picked {{value}} and gave {{score}}. Why?
    max_length: 20
  - id: extra
    type: text
    text: Anything else?
    required: false
  - id: ok
    type: yes_no
    text: Can we follow up?
  - id: mail
    when: ok == true
    type: email
    text: Your email?
    consent: I agree Acme may email me about this.
outro: Thanks {{respondent.first_name or "there"}} — {{tools}}.
"""


def flow_of(tmp_path: Path, name: str, text: str) -> Flow:
    """A flow written (dedented) to ``<name>.yml`` under ``tmp_path`` and loaded."""
    path = tmp_path / f"{name}.yml"
    path.write_text(textwrap.dedent(text).lstrip())
    return load_flow(path, root=tmp_path)


@pytest.fixture
def flow(tmp_path: Path) -> Flow:
    return flow_of(tmp_path, "all", ALL_TYPES)


def run(
    flow: Flow, answers: list[tuple[str, Any]], profile: dict | None = None
) -> tuple[ConversationState, list]:
    outcome = advance(flow, new_state(flow, profile), Start())
    state, transcript = run_from(flow, outcome.state, answers)
    return state, list(outcome.outputs) + transcript


FULL = [
    ("score", 10),
    ("sat", "4"),
    ("effort", 6),
    ("stars", 7),
    ("value", "The lowest price"),
    ("tools", "1, 3"),
    ("why", "cheap and good"),
    ("extra", ""),
    ("ok", "yes"),
    ("mail", {"email": "ann@example.com", "consent": True}),
]


def test_full_run_stores_values_in_documented_forms(flow: Flow) -> None:
    state, transcript = run(flow, FULL, {"first_name": "Ann"})
    assert state.status == "completed"
    assert state.answers == {
        "score": 10,
        "sat": 4,
        "effort": 6,
        "stars": 7,
        "value": "price",
        "tools": ["slack", "figma"],
        "why": "cheap and good",
        "extra": None,
        "ok": True,
        "mail": "ann@example.com",
    }
    assert isinstance(transcript[0], Say) and transcript[0].text == "Hi Ann!"
    assert isinstance(transcript[1], Say) and transcript[1].text == "A few questions."
    assert isinstance(transcript[-1], End)
    assert transcript[-1].text == "Thanks Ann — Slack, Figma."


def test_piping_uses_labels_and_defaults(flow: Flow) -> None:
    _, transcript = run(flow, FULL[:6])
    asks = [o for o in transcript if isinstance(o, Ask)]
    tools_ask = next(a for a in asks if a.step == "tools")
    assert tools_ask.text == "Which tools, friend?"
    why = next(a for a in asks if a.step == "why")
    assert why.text == "You picked The lowest price and gave 10. Why?"


def test_tags_from_rules_and_choices(flow: Flow) -> None:
    state, _ = run(flow, FULL)
    assert state.tags == {"nps:promoter": 1.0, "needs:price": 2.0}
    low, _ = run(
        flow, [("score", 3), ("sat", 1), ("effort", 1), ("stars", 1), ("value", "quality")]
    )
    assert low.tags == {"nps:detractor": 2.0, "needs:quality": 1.0}


def test_save_as_updates_profile(flow: Flow) -> None:
    outcome = advance(flow, new_state(flow), Start())
    state = outcome.state
    for step, value in FULL[:4]:
        state = advance(flow, state, Answer(step, value)).state
    outcome = advance(flow, state, Answer("value", "quality"))
    assert outcome.profile_updates == {"priority": "quality"}
    assert outcome.state.profile["priority"] == "quality"
    assert outcome.recorded is not None and outcome.recorded.profile == {"priority": "quality"}


def test_skip_logic_skips_email_when_no(flow: Flow) -> None:
    answers = [*FULL[:8], ("ok", "no")]
    state, transcript = run(flow, answers)
    assert state.status == "completed"
    assert "mail" in state.skipped
    assert "mail" not in state.answers
    assert not any(isinstance(o, Ask) and o.step == "mail" for o in transcript)


def test_input_specs_describe_each_type(flow: Flow) -> None:
    _, transcript = run(flow, FULL[:9])
    specs = {o.step: o.input for o in transcript if isinstance(o, Ask)}
    assert (specs["score"].min, specs["score"].max, specs["score"].labels) == (
        0,
        10,
        ("Not at all likely", "Extremely likely"),
    )
    assert (specs["sat"].min, specs["sat"].max) == (1, 5)
    assert (specs["effort"].min, specs["effort"].max) == (1, 7)
    assert (specs["stars"].min, specs["stars"].max, specs["stars"].labels) == (
        1,
        10,
        ("Awful", "Superb"),
    )
    assert [c.value for c in specs["value"].choices] == ["price", "quality"]
    assert (specs["tools"].min_picks, specs["tools"].max_picks) == (1, 2)
    assert specs["why"].max_length == 20
    assert specs["extra"].required is False
    assert specs["mail"].consent == "I agree Acme may email me about this."
    assert specs["mail"].to_dict()["kind"] == "email"


def _at(flow: Flow, step: str) -> ConversationState:
    state = advance(flow, new_state(flow), Start()).state
    for name, value in FULL:
        if name == step:
            return state
        state = advance(flow, state, Answer(name, value)).state
    raise AssertionError(step)


@pytest.mark.parametrize(
    ("step", "value", "message"),
    [
        ("score", 11, "whole number from 0 to 10 (0 = Not at all likely, 10 = Extremely likely)"),
        ("score", "nine", "whole number from 0 to 10"),
        ("score", True, "whole number from 0 to 10"),
        ("score", 7.5, "whole number from 0 to 10"),
        ("score", None, "whole number from 0 to 10"),
        ("sat", 0, "from 1 to 5"),
        ("effort", 8, "from 1 to 7"),
        ("stars", 11, "from 1 to 10 (1 = Awful, 10 = Superb)"),
        ("value", "cheapest", "Please pick one of: The lowest price; The best quality."),
        ("value", 3, "Please pick one of"),
        ("tools", "1,2,3", "Please pick 1 to 2 of"),
        ("tools", [], "Please pick 1 to 2 of"),
        ("tools", "teams", "Please pick 1 to 2 of"),
        ("why", "x" * 21, "Please keep it to 20 characters or fewer (yours has 21)."),
        ("why", "   ", "Please type an answer."),
        ("ok", "maybe", "Please answer yes or no."),
        ("mail", "ann@example.com", "Please also confirm: I agree Acme may email me about this."),
        ("mail", {"email": "nope", "consent": True}, "does not look like an email"),
        ("mail", {"email": "a@b.co", "consent": "yes"}, "Please confirm"),
        ("mail", {"email": "a\ud800b@example.com", "consent": True}, "does not look like"),
        ("mail", {"email": "a\x07b@example.com", "consent": True}, "does not look like"),
        ("value", "²", "Please pick one of"),  # a digit int() refuses
        ("tools", ["1", "②"], "Please pick 1 to 2 of"),
    ],
)
def test_invalid_answers_reask_with_what_is_expected(
    flow: Flow, step: str, value: Any, message: str
) -> None:
    state = _at(flow, step)
    outcome = advance(flow, state, Answer(step, value))
    assert outcome.error is not None and message in outcome.error
    assert outcome.recorded is None
    assert outcome.state == state  # nothing changed
    assert isinstance(outcome.outputs[0], Say) and message in outcome.outputs[0].text
    assert isinstance(outcome.outputs[1], Ask) and outcome.outputs[1].step == step


def test_email_without_consent_stores_nothing(flow: Flow) -> None:
    state = _at(flow, "mail")
    outcome = advance(flow, state, Answer("mail", {"email": "ann@example.com", "consent": False}))
    assert outcome.error is None
    assert outcome.recorded is not None and outcome.recorded.value is None
    assert outcome.state.answers["mail"] is None
    assert outcome.state.status == "completed"


def test_text_is_cleaned_of_control_characters(flow: Flow) -> None:
    state = _at(flow, "why")
    outcome = advance(flow, state, Answer("why", "  ok\x00\x1b[31m fine\n "))
    assert outcome.state.answers["why"] == "ok[31m fine"


def test_text_cleaning_drops_exactly_controls_surrogates_and_bidi_marks() -> None:
    """The one-regex cleaner drops the same characters as asking Unicode, character by
    character: categories Cc and Cs (but newline and tab) and the bidi controls."""
    bidi = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
    every = "".join(map(chr, range(0x110000)))
    kept = {ch for ch in every if unicodedata.category(ch) not in ("Cc", "Cs") or ch in "\n\t"}
    assert set(_DROPPED.sub("", every)) == kept - bidi


def test_text_keeps_the_format_characters_people_type(flow: Flow) -> None:
    state = _at(flow, "why")
    family, persian, scotland = (
        "👨\u200d👩\u200d👧",
        "می\u200cخواهم",
        "🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",
    )
    typed = f"{family} {persian} {scotland}"[:20]
    outcome = advance(flow, state, Answer("why", typed + "\u202e"))  # but no bidi override
    assert outcome.state.answers["why"] == typed


def test_answering_a_step_that_is_not_current(flow: Flow) -> None:
    state = _at(flow, "sat")
    with pytest.raises(NotCurrentStep, match="already answered"):
        advance(flow, state, Answer("score", 5))
    with pytest.raises(NotCurrentStep, match="not the current question"):
        advance(flow, state, Answer("why", "later"))


def test_stop_and_timeout_close_the_conversation(flow: Flow) -> None:
    state = _at(flow, "sat")
    stopped = advance(flow, state, Stop())
    assert stopped.state.status == "stopped"
    assert isinstance(stopped.outputs[0], End) and stopped.outputs[0].reason == "stopped"
    with pytest.raises(ConversationClosed):
        advance(flow, stopped.state, Answer("sat", 3))
    expired = advance(flow, state, Timeout())
    assert expired.state.status == "expired"


def test_start_again_resumes_at_the_open_question(flow: Flow) -> None:
    state = _at(flow, "effort")
    outcome = advance(flow, state, Start())
    assert outcome.state == state
    assert [o.step for o in outcome.outputs if isinstance(o, Ask)] == ["effort"]


def test_advance_never_mutates_its_input(flow: Flow) -> None:
    # Every step type, multi-choice lists and tags included: the service keeps the state it
    # loaded (to compare a retried answer with the stored one) while the engine moves on.
    state = advance(flow, new_state(flow, {"plan": "pro"}), Start()).state
    for step, value in FULL:
        before = state.to_json()
        outcome = advance(flow, state, Answer(step, value))
        assert state.to_json() == before, step
        assert outcome.state is not state
        state = outcome.state
    assert state.answers["tools"] and state.tags


def test_state_round_trips_through_json(flow: Flow) -> None:
    state, _ = run(flow, FULL[:6])
    assert ConversationState.from_json(state.to_json()) == state


def test_message_with_end_finishes_early(tmp_path: Path) -> None:
    flow = flow_of(
        tmp_path,
        "early",
        """
            id: early
            kind: interview
            title: Early
            outro: Never shown when ended early
            steps:
              - id: willing
                type: yes_no
                text: Up for a chat?
              - id: bye
                when: willing == false
                type: message
                end: true
                text: No problem, thanks anyway!
              - id: when
                type: text
                text: When suits you?
            """,
    )
    state = advance(flow, new_state(flow), Start()).state
    no = advance(flow, state, Answer("willing", "no"))
    assert no.state.status == "completed"
    # its words are the closing ones, said once (no channel adds its own thanks after them)
    assert no.outputs == [End("completed", "No problem, thanks anyway!")]
    yes = advance(flow, state, Answer("willing", "yes"))
    assert yes.state.current == "when"

    # coming back to it later shows the words it ended with, not a blank goodbye
    assert resume(flow, no.state) == [End("completed", "No problem, thanks anyway!")]
    done = advance(flow, yes.state, Answer("when", "Tuesday")).state
    assert resume(flow, done) == [End("completed", "Never shown when ended early")]
    # anonymous: the answers are gone, and the ending reached would say what they were
    secret = dataclasses.replace(flow, anonymous=True)
    assert resume(secret, no.state) == [End("completed", None)]


PIPED_LABELS = """
id: piped
kind: microsurvey
title: Piped
steps:
  - id: pick
    type: choice
    text: Which?
    choices:
      - {value: own, label: "Option for {{respondent.first_name or 'you'}}"}
      - {value: other, label: Other}
  - id: why
    type: text
    text: Why {{pick}}?
"""


def test_piped_choice_labels_read_the_same_everywhere(tmp_path: Path) -> None:
    flow = flow_of(tmp_path, "piped", PIPED_LABELS)
    state = advance(flow, new_state(flow, {"first_name": "Ann"}), Start()).state
    ask = ask_for(flow, flow.step("pick"), state)
    assert [c.label for c in ask.input.choices or ()] == ["Option for Ann", "Other"]
    refused = advance(flow, state, Answer("pick", "nothing like it"))
    assert refused.error == "Please pick one of: Option for Ann; Other."
    typed = advance(flow, state, Answer("pick", "option for ann"))  # the label as shown
    assert typed.error is None and typed.state.answers["pick"] == "own"
    assert typed.outputs[-1].text == "Why Option for Ann?"  # piping the choice
    assert choice_labels(flow, flow.step("pick")) == ("Option for you", "Other")  # results


def test_an_optional_multi_choice_tells_skipped_from_none_picked(tmp_path: Path) -> None:
    flow = flow_of(
        tmp_path,
        "m",
        """
            id: m
            kind: microsurvey
            title: M
            steps:
              - id: used
                type: multi_choice
                required: false
                min_picks: 0
                text: Which of these do you use?
                choices: [{value: slack, label: Slack}, {value: figma, label: Figma}]
            """,
    )
    start = advance(flow, new_state(flow), Start()).state
    none_picked = advance(flow, start, Answer("used", []))
    assert none_picked.recorded is not None and none_picked.recorded.value == []
    skipped = advance(flow, start, Answer("used", None))
    assert skipped.recorded is not None and skipped.recorded.value is None  # nothing stored


def test_the_churn_flow_promises_contact_only_with_an_address() -> None:
    from conftest import FLOWS

    churn = load_flow(FLOWS / "churn-exit.yml", root=FLOWS)
    start = advance(churn, new_state(churn), Start()).state
    state, _ = run_from(churn, start, [("reasons", ["no_longer_needed"]), ("no_need_detail", "x")])
    state, _ = run_from(churn, state, [("kept", "nothing"), ("winback", True)])
    declined = advance(churn, state, Answer("email", None))
    assert declined.state.status == "completed"
    assert "in touch" not in " ".join(o.text or "" for o in declined.outputs)
    agreed = advance(churn, state, Answer("email", {"email": "a@b.co", "consent": True}))
    assert "in touch" in (agreed.outputs[-1].text or "")


def run_from(
    flow: Flow, state: ConversationState, answers: list[tuple[str, Any]]
) -> tuple[ConversationState, list]:
    outputs: list = []
    for step, value in answers:
        outcome = advance(flow, state, Answer(step, value))
        assert outcome.error is None, (step, value, outcome.error)
        state = outcome.state
        outputs += outcome.outputs
    return state, outputs


def test_lead_in_is_what_was_said_just_before_the_open_question(tmp_path: Path) -> None:
    flow = flow_of(
        tmp_path,
        "lead",
        """
            id: lead
            kind: microsurvey
            title: Lead
            intro: Hi {{respondent.first_name or "there"}}.
            steps:
              - {id: q1, type: yes_no, text: "First?"}
              - {id: skipped, type: message, when: q1 == false, text: Never said}
              - {id: between, type: message, text: "Thanks for {{q1}}."}
              - {id: q2, type: yes_no, text: "Second?"}
            """,
    )
    start = advance(flow, new_state(flow, {"first_name": "Ann"}), Start()).state
    assert lead_in(flow, start) == [Say("Hi Ann.")]
    after = advance(flow, start, Answer("q1", "yes")).state
    assert lead_in(flow, after) == [Say("Thanks for yes.")]
    done = advance(flow, after, Answer("q2", "no")).state
    assert lead_in(flow, done) == []


def test_a_choice_piped_through_or_shows_its_label(tmp_path: Path) -> None:
    flow = flow_of(
        tmp_path,
        "pick",
        """
            id: pick
            kind: microsurvey
            title: Pick
            steps:
              - id: plan
                type: choice
                text: Which plan?
                required: false
                choices:
                  - {value: pro, label: Professional}
                  - {value: basic, label: Basic}
              - id: why
                type: text
                text: Why {{plan or "no plan"}}, {{respondent.first_name or "friend"}}?
            """,
    )
    _, transcript = run(flow, [("plan", "pro")])
    assert [o.text for o in transcript if isinstance(o, Ask)][-1] == "Why Professional, friend?"
    _, skipped = run(flow, [("plan", None)])
    assert [o.text for o in skipped if isinstance(o, Ask)][-1] == "Why no plan, friend?"
