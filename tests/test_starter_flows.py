"""The starter library in flows/: it loads, validates, uses the documented tags, and its
skip logic really branches when driven through the pure engine."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.engine import Answer, Ask, ConversationState, End, Output, Say, Start, advance, new_state
from bot.flow import Flow, load_all, validate_tree
from bot.flow.schema import STEP_TYPES, PersonasFile, SegmentsFile, ThemesFile

FLOWS = Path(__file__).resolve().parent.parent / "flows"
STARTERS = {"welcome", "nps", "csat", "ces", "pmf", "churn-exit", "interview-recruit"}
MICROSURVEYS = ("nps", "csat", "ces", "pmf")


def _config(name: str, cls: Any) -> Any:
    return cls.model_validate(yaml.safe_load((FLOWS / name).read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def flows() -> dict[str, Flow]:
    return load_all(FLOWS)


@pytest.fixture(scope="module")
def dimensions() -> dict[str, set[str]]:
    data = _config("segments.yml", SegmentsFile)
    return {name: set(dim.segments) for name, dim in data.dimensions.items()}


@dataclass
class Run:
    state: ConversationState
    asked: list[str] = field(default_factory=list)
    outputs: list[Output] = field(default_factory=list)
    asks: dict[str, Ask] = field(default_factory=dict)
    profile_updates: dict[str, Any] = field(default_factory=dict)

    @property
    def said(self) -> list[str]:
        """What the person read, closing words included."""
        return [o.text for o in self.outputs if isinstance(o, Say | End) and o.text]

    @property
    def end(self) -> End:
        last = self.outputs[-1]
        assert isinstance(last, End), last
        return last


def run(flow: Flow, answers: dict[str, Any], profile: dict[str, Any] | None = None) -> Run:
    """Start the flow and answer every question from ``answers``; an unplanned question fails."""
    outcome = advance(flow, new_state(flow, profile), Start())
    result = Run(outcome.state, outputs=list(outcome.outputs))
    while outcome.state.is_open:
        ask = outcome.outputs[-1]
        assert isinstance(ask, Ask), outcome.outputs
        assert ask.step in answers, (
            f"{flow.id}: unexpected question '{ask.step}' (asked so far: {result.asked})"
        )
        result.asked.append(ask.step)
        result.asks[ask.step] = ask
        outcome = advance(flow, outcome.state, Answer(ask.step, answers[ask.step]))
        assert outcome.error is None, f"{ask.step}: {outcome.error}"
        result.outputs.extend(outcome.outputs)
        result.profile_updates.update(outcome.profile_updates)
    result.state = outcome.state
    return result


# --- loading and validation ------------------------------------------------------------


def test_every_starter_flow_loads(flows: dict[str, Flow]) -> None:
    assert set(flows) == STARTERS


def test_validate_tree_reports_every_file_ok() -> None:
    reports = {Path(r.path).name: r for r in validate_tree(FLOWS)}
    bad = [str(p) for r in reports.values() for p in r.problems]
    assert bad == []
    assert {f"{name}.yml" for name in STARTERS} <= set(reports)
    kinds = {name: r.kind for name, r in reports.items()}
    assert {kinds[n] for n in ("segments.yml", "personas.yml", "themes.yml")} == {"config"}
    assert kinds["about-you.yml"] == kinds["contact-consent.yml"] == "block"


def test_config_files_match_their_schemas(dimensions: dict[str, set[str]]) -> None:
    assert {"needs", "psychographic", "nps", "jtbd", "lifecycle", "firmographic"} <= set(dimensions)
    assert dimensions["needs"] == {"price", "quality", "partnership", "service"}
    assert dimensions["lifecycle"] == {"new", "active", "power", "inactive"}
    segments = _config("segments.yml", SegmentsFile)
    assert set(segments.dimensions["needs"].keywords) == dimensions["needs"]
    personas = _config("personas.yml", PersonasFile)
    assert 3 <= len(personas.personas) <= 4
    themes = _config("themes.yml", ThemesFile)
    assert {
        "pricing",
        "performance",
        "support",
        "onboarding",
        "integrations",
        "reliability",
    } <= set(themes.themes)
    assert all(theme.synonyms for theme in themes.themes.values())


def test_persona_assumptions_name_declared_segments(dimensions: dict[str, set[str]]) -> None:
    personas = _config("personas.yml", PersonasFile)
    for persona in personas.personas:
        assert persona.assumptions, persona.id
        for assumption in persona.assumptions:
            expr = assumption.segment
            pairs = [(d, s) for d, s in re.findall(r"(\w+)\s*=\s*(\w+)", expr)]
            for dim, listed in re.findall(r"(\w+)\s+in\s+\(([^)]*)\)", expr):
                pairs += [(dim, s.strip()) for s in listed.split(",")]
            assert pairs, expr
            for dim, seg in pairs:
                assert seg in dimensions.get(dim, set()), (
                    f"{persona.id}: {dim}={seg} is not in segments.yml"
                )


EXPECTED_META = {
    "welcome": ("welcome", {"first_contact": True}),
    "nps": ("microsurvey", {"campaign": True}),
    "csat": ("microsurvey", {"campaign": True}),
    "ces": ("microsurvey", {"campaign": True}),
    "pmf": ("microsurvey", {"campaign": True}),
    "churn-exit": ("churn", {"event": "subscription_cancelled"}),
    "interview-recruit": ("interview", {"campaign": True}),
}


@pytest.mark.parametrize("flow_id", sorted(EXPECTED_META))
def test_kind_trigger_and_expiry(flows: dict[str, Flow], flow_id: str) -> None:
    flow = flows[flow_id]
    kind, trigger = EXPECTED_META[flow_id]
    assert flow.kind == kind
    assert flow.trigger.model_dump(exclude_none=True) == trigger
    assert flow.expires_after is not None
    if kind == "microsurvey":
        assert flow.expires_after == 7 * 86400
    assert not flow.anonymous  # every starter flow feeds segments, which anonymous flows do not


def test_every_step_type_is_used(flows: dict[str, Flow]) -> None:
    used = {step.type for flow in flows.values() for step in flow.steps}
    assert used == set(STEP_TYPES)
    conditional_ends = [
        (flow.id, step.id)
        for flow in flows.values()
        for step in flow.steps
        if step.type == "message" and step.spec.end and step.when is not None  # type: ignore[union-attr]
    ]
    assert ("interview-recruit", "not_willing") in conditional_ends


def _raw_includes() -> dict[str, set[str]]:
    used: dict[str, set[str]] = {}
    for path in sorted(FLOWS.glob("*.yml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        for item in data.get("steps", []) if isinstance(data, dict) else []:
            if isinstance(item, dict) and "include" in item:
                used.setdefault(item["include"], set()).add(path.stem)
    return used


def test_every_block_is_included_by_at_least_two_flows() -> None:
    includes = _raw_includes()
    blocks = {f"blocks/{p.name}" for p in (FLOWS / "blocks").glob("*.yml")}
    assert blocks == {"blocks/about-you.yml", "blocks/contact-consent.yml"}
    for block in blocks:
        assert len(includes.get(block, set())) >= 2, (block, includes.get(block))


def test_role_and_company_size_are_saved_to_the_profile(flows: dict[str, Flow]) -> None:
    for flow_id in ("welcome", "interview-recruit"):
        flow = flows[flow_id]
        assert flow.step("role").spec.save_as == "role"
        assert flow.step("company_size").spec.save_as == "company_size"


def _all_tags(flow: Flow) -> set[str]:
    tags: set[str] = set()
    for step in flow.steps:
        for choice in step.choices:
            tags |= set(choice.weights)
        for rule in step.tag_rules:
            tags |= set(rule.weights)
    return tags


def test_tags_use_the_documented_dimensions(
    flows: dict[str, Flow], dimensions: dict[str, set[str]]
) -> None:
    for flow in flows.values():
        for tag in _all_tags(flow):
            dim, seg = tag.split(":", 1)
            assert seg in dimensions.get(dim, set()), (
                f"{flow.id}: tag {tag} is not declared in segments.yml"
            )
    expected_prefixes = {
        "welcome": {"jtbd", "needs", "psychographic", "role", "firmographic"},
        "nps": {"nps"},
        "csat": {"csat"},
        "ces": {"ces"},
        "pmf": {"pmf"},
        "churn-exit": {"churn"},
    }
    for flow_id, prefixes in expected_prefixes.items():
        assert {t.split(":")[0] for t in _all_tags(flows[flow_id])} == prefixes, flow_id
    value = flows["welcome"].step("value")
    assert {c.value: c.weights for c in value.choices} == {
        "price": {"needs:price": 2.0},
        "quality": {"needs:quality": 2.0},
        "partnership": {"needs:partnership": 2.0},
        "service": {"needs:service": 2.0},
    }
    psychographic = {t for t in _all_tags(flows["welcome"]) if t.startswith("psychographic:")}
    assert psychographic == {
        "psychographic:early_adopter",
        "psychographic:pragmatist",
        "psychographic:skeptic",
    }


# --- microsurveys: the follow-up depends on the score ----------------------------------

BANDS = {
    # flow: [(first answer, follow-up step that must be asked, tag)]
    "nps": [(0, "why_low", "nps:detractor"), (3, "why_low", "nps:detractor"), (6, "why_low", "nps:detractor"),
            (7, "why_mid", "nps:passive"), (8, "why_mid", "nps:passive"),
            (9, "why_high", "nps:promoter"), (10, "why_high", "nps:promoter")],
    "csat": [(1, "why_low", "csat:dissatisfied"), (2, "why_low", "csat:dissatisfied"), (3, "why_mid", "csat:neutral"),
             (4, "why_high", "csat:satisfied"), (5, "why_high", "csat:satisfied")],
    "ces": [(1, "why_low", "ces:difficult"), (3, "why_low", "ces:difficult"), (4, "why_mid", "ces:neutral"),
            (5, "why_high", "ces:easy"), (7, "why_high", "ces:easy")],
}  # fmt: skip


@pytest.mark.parametrize(
    ("flow_id", "score", "follow_up", "tag"), [(f, *b) for f, bands in BANDS.items() for b in bands]
)
def test_scale_follow_up_depends_on_the_score(
    flows: dict[str, Flow], flow_id: str, score: int, follow_up: str, tag: str
) -> None:
    flow = flows[flow_id]
    answers: dict[str, Any] = {
        "task": "reporting",
        "score": score,
        follow_up: "Some words about it.",
    }
    result = run(flow, answers)
    expected = ["task"] if flow_id == "ces" else []
    assert result.asked == [*expected, "score", follow_up]
    assert flow.step(follow_up).type == "text"
    others = {"why_low", "why_mid", "why_high"} - {follow_up}
    assert others <= set(result.state.skipped)
    assert set(result.state.tags) == {tag}
    assert result.state.status == "completed"
    assert result.state.answers["score"] == score


def test_nps_detractor_sees_their_score_piped(flows: dict[str, Flow]) -> None:
    result = run(
        flows["nps"], {"score": 3, "why_low": "Exports fail."}, profile={"first_name": "Ann"}
    )
    assert result.said[0].startswith("Hi Ann!")
    assert "score of 3" in result.asks["why_low"].text
    assert result.state.tags == {"nps:detractor": 1.0}
    assert result.end.text is not None and "your 3" in result.end.text


def test_nps_greets_someone_without_a_name(flows: dict[str, Flow]) -> None:
    result = run(flows["nps"], {"score": 10, "why_high": "Speed."})
    assert result.said[0].startswith("Hi there!")


def test_ces_pipes_the_task_label(flows: dict[str, Flow]) -> None:
    result = run(flows["ces"], {"task": "integration", "score": 2, "why_low": "Auth kept failing."})
    assert result.asks["score"].help == "Task: Connecting Acme to another tool"
    assert result.state.answers["task"] == "integration"


@pytest.mark.parametrize(
    ("feeling", "expected"),
    [
        ("very_disappointed", ["disappointment", "who_benefits", "main_benefit", "alternative"]),
        ("somewhat_disappointed", ["disappointment", "who_benefits", "main_benefit", "improve"]),
        ("not_disappointed", ["disappointment", "who_benefits", "main_benefit", "improve"]),
        ("no_longer_use", ["disappointment", "stopped_why"]),
    ],
)
def test_pmf_follow_up_depends_on_the_answer(
    flows: dict[str, Flow], feeling: str, expected: list[str]
) -> None:
    flow = flows["pmf"]
    answers = dict.fromkeys(
        ["who_benefits", "main_benefit", "alternative", "improve", "stopped_why"], "text"
    )
    result = run(flow, {"disappointment": feeling, **answers})
    assert result.asked == expected
    assert result.state.tags == {f"pmf:{feeling}": 1.0}


def test_pmf_asks_the_sean_ellis_question(flows: dict[str, Flow]) -> None:
    step = flows["pmf"].steps[0]
    assert step.type == "choice"
    assert "no longer use" in step.spec.text
    assert {"very_disappointed", "somewhat_disappointed", "not_disappointed"} <= {
        c.value for c in step.choices
    }


@pytest.mark.parametrize("flow_id", MICROSURVEYS)
def test_microsurveys_are_short(flows: dict[str, Flow], flow_id: str) -> None:
    flow = flows[flow_id]
    first = flow.steps[0] if flow_id != "ces" else flow.step("score")
    lo, hi = first.bounds or (0, len(first.choices) - 1)
    values = list(range(lo, hi + 1)) if first.bounds else [c.value for c in first.choices]
    for value in values:
        answers: dict[str, Any] = {s.id: "An answer." for s in flow.steps if s.type == "text"}
        answers.update({first.id: value, "task": "setup"})
        result = run(flow, answers)
        assert 2 <= len(result.asked) <= 4, (value, result.asked)
        assert any(flow.step(s).type == "text" for s in result.asked), (value, result.asked)


# --- churn-exit -----------------------------------------------------------------------

CHURN_DETAILS = {
    "too_expensive": "price_detail",
    "missing_features": "features_detail",
    "hard_to_use": "usability_detail",
    "technical_issues": "reliability_detail",
    "poor_support": "support_detail",
    "switched": "switched_detail",
    "no_longer_needed": "no_need_detail",
    "other": "other_detail",
}


def _churn_answers(reasons: list[str], winback: bool) -> dict[str, Any]:
    answers: dict[str, Any] = {step: "Details." for step in CHURN_DETAILS.values()}
    answers.update(
        reasons=reasons, price_detail="low_value", kept="A cheaper plan.", winback=winback
    )
    answers["email"] = {"email": "sam@example.com", "consent": True}
    return answers


def test_churn_reasons_match_their_follow_ups(flows: dict[str, Flow]) -> None:
    reasons = flows["churn-exit"].step("reasons")
    assert reasons.type == "multi_choice"
    assert {c.value for c in reasons.choices} == set(CHURN_DETAILS)


@pytest.mark.parametrize(("reason", "detail"), sorted(CHURN_DETAILS.items()))
def test_each_churn_reason_asks_only_its_own_follow_up(
    flows: dict[str, Flow], reason: str, detail: str
) -> None:
    result = run(flows["churn-exit"], _churn_answers([reason], winback=False))
    assert result.asked == ["reasons", detail, "kept", "winback"]
    assert set(CHURN_DETAILS.values()) - {detail} <= set(result.state.skipped)
    assert len(result.state.tags) == 1 and next(iter(result.state.tags)).startswith("churn:")


def test_too_expensive_is_tagged_and_keeps_its_choice(flows: dict[str, Flow]) -> None:
    result = run(flows["churn-exit"], _churn_answers(["too_expensive"], winback=False))
    assert result.state.tags == {"churn:price": 1.0}
    assert result.state.answers["price_detail"] == "low_value"
    assert "features_detail" not in result.state.answers


def test_several_churn_reasons_ask_each_follow_up_in_order(flows: dict[str, Flow]) -> None:
    result = run(
        flows["churn-exit"], _churn_answers(["technical_issues", "missing_features"], winback=False)
    )
    assert result.asked == ["reasons", "features_detail", "reliability_detail", "kept", "winback"]
    assert result.state.answers["reasons"] == ["missing_features", "technical_issues"]
    assert result.state.tags == {"churn:features": 1.0, "churn:reliability": 1.0}


def test_declined_win_back_ends_without_asking_for_email(flows: dict[str, Flow]) -> None:
    result = run(flows["churn-exit"], _churn_answers(["switched"], winback=False))
    assert "email" not in result.asked
    assert result.end.reason == "completed"  # its words close it, no outro after end: true
    assert result.end.text is not None and "cancellation stands" in result.end.text


def test_accepted_win_back_asks_for_email_with_consent(flows: dict[str, Flow]) -> None:
    result = run(flows["churn-exit"], _churn_answers(["too_expensive"], winback=True))
    assert result.asked[-2:] == ["winback", "email"]
    assert result.asks["email"].input.consent
    assert result.state.answers["email"] == "sam@example.com"
    assert result.end.text is not None and "in touch" in result.end.text


# --- interview-recruit ----------------------------------------------------------------


def _interview_answers(email: Any) -> dict[str, Any]:
    return {
        "willing": True,
        "role": "product",
        "company_size": "midsize",
        "topics": ["reporting", "integrations"],
        "availability": ["morning"],
        "incentive": "donation",
        "email": email,
    }


def test_interview_no_ends_politely_at_once(flows: dict[str, Flow]) -> None:
    result = run(flows["interview-recruit"], {"willing": "no"})
    assert result.asked == ["willing"]
    assert result.state.answers == {"willing": False}
    assert result.end.reason == "completed"  # the end step's words close it
    assert "thank you for letting us know" in (result.end.text or "").lower()


def test_interview_yes_collects_topics_availability_and_email(flows: dict[str, Flow]) -> None:
    answers = _interview_answers({"email": "ann@example.com", "consent": True})
    result = run(flows["interview-recruit"], answers)
    assert result.asked == [
        "willing",
        "role",
        "company_size",
        "topics",
        "availability",
        "incentive",
        "email",
    ]
    assert result.state.answers["topics"] == ["reporting", "integrations"]
    assert result.state.answers["email"] == "ann@example.com"
    assert result.end.text is not None and "ann@example.com" in result.end.text
    assert result.profile_updates == {"role": "product", "company_size": "midsize"}


def test_interview_skips_what_the_profile_already_knows(flows: dict[str, Flow]) -> None:
    answers = _interview_answers({"email": "ann@example.com", "consent": True})
    result = run(
        flows["interview-recruit"], answers, profile={"role": "design", "company_size": "large"}
    )
    assert "role" not in result.asked and "company_size" not in result.asked
    assert {"role", "company_size"} <= set(result.state.skipped)


def test_interview_without_email_consent_stores_nothing_and_says_so(flows: dict[str, Flow]) -> None:
    result = run(
        flows["interview-recruit"],
        _interview_answers({"email": "ann@example.com", "consent": False}),
    )
    assert result.state.answers["email"] is None
    assert "Without an email address" in (result.end.text or "")  # said once, as the end


# --- welcome ---------------------------------------------------------------------------

WELCOME = {
    "jtbd": "report",
    "jtbd_detail": "Weekly reporting in minutes.",
    "role": "engineering",
    "company_size": "small",
    "value": "price",
    "attitude_first": 5,
    "attitude_proven": 4,
    "attitude_doubt": 1,
}


def test_welcome_asks_everything_in_order(flows: dict[str, Flow]) -> None:
    result = run(flows["welcome"], WELCOME)
    assert result.asked == list(WELCOME)
    assert result.state.status == "completed"


@pytest.mark.parametrize("need", ["price", "quality", "partnership", "service"])
def test_welcome_value_choice_adds_the_needs_tag(flows: dict[str, Flow], need: str) -> None:
    result = run(flows["welcome"], {**WELCOME, "value": need})
    needs = {t: w for t, w in result.state.tags.items() if t.startswith("needs:")}
    assert needs == {f"needs:{need}": 2.0}


def test_welcome_tags_jtbd_firmographic_and_attitudes(flows: dict[str, Flow]) -> None:
    result = run(flows["welcome"], WELCOME)
    assert result.state.tags == {
        "jtbd:report": 2.0,
        "role:engineering": 1.0,
        "firmographic:small": 1.0,
        "needs:price": 2.0,
        "psychographic:early_adopter": 2.0,
        "psychographic:pragmatist": 1.0,
    }


def test_welcome_disagreement_adds_no_psychographic_tag(flows: dict[str, Flow]) -> None:
    result = run(
        flows["welcome"],
        {**WELCOME, "attitude_first": 2, "attitude_proven": 3, "attitude_doubt": 5},
    )
    psycho = {t: w for t, w in result.state.tags.items() if t.startswith("psychographic:")}
    assert psycho == {"psychographic:skeptic": 2.0}


def test_welcome_save_as_puts_role_and_size_in_the_profile(flows: dict[str, Flow]) -> None:
    result = run(flows["welcome"], WELCOME, profile={"first_name": "Ann"})
    assert result.state.profile == {
        "first_name": "Ann",
        "role": "engineering",
        "company_size": "small",
    }
    assert result.profile_updates == {"role": "engineering", "company_size": "small"}


def test_welcome_greets_by_name_or_not(flows: dict[str, Flow]) -> None:
    named = run(flows["welcome"], WELCOME, profile={"first_name": "Ann"})
    assert named.said[0].startswith("Hi Ann,")
    assert named.end.text is not None and named.end.text.startswith("Thank you, Ann!")
    anonymous = run(flows["welcome"], WELCOME)
    assert anonymous.said[0].startswith("Hi there,")
    assert anonymous.end.text is not None and anonymous.end.text.startswith("Thank you!")


def test_welcome_job_detail_may_be_skipped(flows: dict[str, Flow]) -> None:
    result = run(flows["welcome"], {**WELCOME, "jtbd_detail": ""})
    assert result.state.answers["jtbd_detail"] is None
    assert result.asked == list(WELCOME)
