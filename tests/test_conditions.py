"""The condition language: parsing, evaluation semantics, and errors with offsets."""

from __future__ import annotations

import pytest

from bot.flow.conditions import ConditionSyntaxError, Name, evaluate, names, parse, truthy_in
from bot.flow.template import compile_template


def ev(source: str, answers: dict | None = None, respondent: dict | None = None):
    return evaluate(parse(source), truthy_in(answers or {}, respondent or {}))


@pytest.mark.parametrize(
    ("source", "answers", "expected"),
    [
        ("score >= 9", {"score": 9}, True),
        ("score >= 9", {"score": 8}, False),
        ("score <= 6 and reason == 'price'", {"score": 3, "reason": "price"}, True),
        ("score <= 6 and reason == 'price'", {"score": 3, "reason": "bugs"}, False),
        ("score > 8 or reason == 'price'", {"score": 3, "reason": "price"}, True),
        ("not (score > 8)", {"score": 3}, True),
        ("not score > 8", {"score": 9}, False),
        ("reason in ('price', 'bugs')", {"reason": "bugs"}, True),
        ("reason in ['price', 'bugs']", {"reason": "ux"}, False),
        ("reason not in ('price', 'bugs')", {"reason": "ux"}, True),
        ("'slack' in tools", {"tools": ["slack", "jira"]}, True),
        ("'teams' in tools", {"tools": ["slack", "jira"]}, False),
        ("happy == true", {"happy": True}, True),
        ("happy == true", {"happy": 1}, False),  # booleans never equal numbers
        ("score != 5", {"score": 4}, True),
        ("score == 7.5", {"score": 7.5}, True),
        ("(score >= 7) and (score <= 8)", {"score": 8}, True),
        ('name == "O\'Brien"', {"name": "O'Brien"}, True),
        # one value in brackets is a one-item list, not a text to search in
        ("plan in ('basic_plus')", {"plan": "basic"}, False),
        ("plan in ('basic_plus')", {"plan": "basic_plus"}, True),
        ("plan not in ('basic_plus')", {"plan": "basic"}, True),
        ("'slow' in why", {"why": "too slow"}, True),  # a text step: still "contains"
    ],
)
def test_evaluates(source: str, answers: dict, expected: bool) -> None:
    assert bool(ev(source, answers)) is expected


def test_missing_answers_are_null_and_never_crash() -> None:
    assert ev("score >= 9", {}) is False
    assert ev("score <= 6", {}) is False
    assert ev("score == null", {}) is True
    assert ev("reason in ('a', 'b')", {}) is False
    assert ev("'x' in tools", {}) is False


def test_unlike_types_compare_false_instead_of_raising() -> None:
    assert ev("score > 'abc'", {"score": 3}) is False
    assert ev("flag < 3", {"flag": True}) is False


def test_respondent_attributes() -> None:
    assert ev("respondent.role == 'pm'", {}, {"role": "pm"}) is True
    assert ev("respondent.role == 'pm'", {}, {}) is False
    assert ev("respondent.plan in ('pro', 'team')", {}, {"plan": "team"}) is True


def test_or_returns_first_truthy_value_for_piping() -> None:
    assert ev('respondent.first_name or "there"', {}, {"first_name": "Ann"}) == "Ann"
    assert ev('respondent.first_name or "there"', {}, {}) == "there"
    assert ev('respondent.first_name or "there"', {}, {"first_name": ""}) == "there"


def test_names_in_source_order() -> None:
    node = parse("a > 1 and (respondent.role == 'x' or b in (1, 2))")
    assert [n.dotted for n in names(node)] == ["a", "respondent.role", "b"]


@pytest.mark.parametrize(
    ("source", "offset", "fragment"),
    [
        ("score = 9", 6, "use =="),
        ("score >=", 8, "expected a value"),
        ("score >= 9 9", 11, "join conditions"),
        ("(score > 1", 10, "expected ')'"),
        ("score > 1 &", 10, "unexpected character"),
        ("", 0, "empty expression"),
        ("__import__('os')", 10, "join conditions"),
        ("score =< 6", 6, "write '<=' here"),
        ("score >= 7 && plan == 'pro'", 11, "write 'and' here"),
        ("!(score > 3)", 0, "write 'not' here"),
    ],
)
def test_syntax_errors_have_offsets(source: str, offset: int, fragment: str) -> None:
    with pytest.raises(ConditionSyntaxError) as info:
        parse(source)
    assert fragment in info.value.message
    assert info.value.offset == offset


def test_no_python_evaluation_is_possible() -> None:
    # A function call is not part of the grammar, so it cannot even parse.
    with pytest.raises(ConditionSyntaxError):
        parse("open('/etc/passwd')")
    with pytest.raises(ConditionSyntaxError):
        parse("score.__class__ > 1 + 1")


def test_overlong_expression_rejected() -> None:
    with pytest.raises(ConditionSyntaxError, match="longer than"):
        parse("a == 1 or " * 100 + "a == 2")


def test_template_compiles_and_renders() -> None:
    template = compile_template('Hi {{respondent.first_name or "there"}}, you gave {{ score }}.')
    rendered = template.render(truthy_in({"score": 7}, {"first_name": "Ann"}))
    assert rendered == "Hi Ann, you gave 7."
    assert [n.dotted for n in template.names()] == ["respondent.first_name", "score"]
    assert isinstance(next(template.names()), Name)


def test_template_errors_point_inside_the_text() -> None:
    with pytest.raises(ConditionSyntaxError) as info:
        compile_template("You said {{ score >= }} today")
    assert info.value.offset == len("You said {{ score >=")
    with pytest.raises(ConditionSyntaxError, match="closing"):
        compile_template("Broken {{ score")
