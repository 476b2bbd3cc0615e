"""The flow loader: every rejection comes with file:line:col and a hint; good flows compile."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from bot.errors import FlowError
from bot.flow import flow_from_definition, load_all, load_flow, validate_tree
from bot.flow.loader import load_each
from bot.flow.yamlsource import MAX_FILE_BYTES


def write(root: Path, name: str, text: str) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def problems(root: Path, name: str, text: str) -> list[str]:
    path = write(root, name, text)
    with pytest.raises(FlowError) as info:
        load_flow(path, root=root)
    return [str(p).removeprefix(f"{root.name}/") for p in info.value.problems]


GOOD = """
id: demo
kind: microsurvey
title: Demo
steps:
  - id: score
    type: nps
    text: How likely?
  - id: why
    when: score <= 6
    type: text
    text: Why {{score}}?
"""


def test_good_flow_compiles(tmp_path: Path) -> None:
    flow = load_flow(write(tmp_path, "demo.yml", GOOD), root=tmp_path)
    assert flow.id == "demo"
    assert [s.id for s in flow.steps] == ["score", "why"]
    assert flow.step("why").when is not None
    assert len(flow.hash) == 16
    assert flow.path == str((tmp_path / "demo.yml").resolve())  # absolute, whatever the cwd


def test_hash_changes_with_content_and_is_stable(tmp_path: Path) -> None:
    path = write(tmp_path, "demo.yml", GOOD)
    first = load_flow(path, root=tmp_path).hash
    assert load_flow(path, root=tmp_path).hash == first
    path.write_text(path.read_text().replace("How likely?", "How likely are you?"))
    assert load_flow(path, root=tmp_path).hash != first


def test_stored_definition_rebuilds_same_flow(tmp_path: Path) -> None:
    flow = load_flow(write(tmp_path, "demo.yml", GOOD), root=tmp_path)
    again = flow_from_definition(flow.definition)
    assert again.hash == flow.hash
    assert [s.id for s in again.steps] == ["score", "why"]


def test_unknown_key_with_did_you_mean(tmp_path: Path) -> None:
    out = problems(
        tmp_path,
        "demo.yml",
        """
        id: demo
        kind: microsurvey
        title: Demo
        steps:
          - id: score
            type: nps
            text: How likely?
            wehn: score > 1
        """,
    )
    assert out == ["demo.yml:8:5: unknown key 'wehn' (did you mean 'when'?)"]


def test_unknown_top_level_key(tmp_path: Path) -> None:
    out = problems(tmp_path, "demo.yml", GOOD.replace("title: Demo", "title: Demo\ntitel: Oops"))
    assert out == ["demo.yml:4:1: unknown key 'titel' (did you mean 'title'?)"]


def test_unknown_key_in_choice(tmp_path: Path) -> None:
    out = problems(
        tmp_path,
        "demo.yml",
        """
        id: demo
        kind: microsurvey
        title: Demo
        steps:
          - id: pick
            type: choice
            text: Pick
            choices:
              - {value: a, label: A, tag: {needs:price: 1}}
        """,
    )
    assert len(out) == 1
    assert out[0].startswith("demo.yml:9:30: unknown key 'tag'")
    assert "did you mean 'tags'?" in out[0]


def test_duplicate_step_ids(tmp_path: Path) -> None:
    out = problems(tmp_path, "demo.yml", GOOD.replace("id: why", "id: score"))
    assert len(out) == 1
    assert out[0].startswith("demo.yml:8:9: duplicate step id 'score' (first used at ")
    assert out[0].endswith("demo.yml:5)")


def test_condition_naming_unknown_step(tmp_path: Path) -> None:
    out = problems(tmp_path, "demo.yml", GOOD.replace("when: score <= 6", "when: scroe <= 6"))
    assert out == ["demo.yml:9:11: unknown name 'scroe' (did you mean 'score'?)"]


def test_condition_naming_later_step(tmp_path: Path) -> None:
    text = (
        GOOD.replace("    when: score <= 6\n", "") + "  - id: later\n    type: text\n    text: x\n"
    )
    text = text.replace(
        "  - id: score\n    type: nps", "  - id: score\n    when: later == 'x'\n    type: nps"
    )
    out = problems(tmp_path, "demo.yml", text)
    assert out == [
        "demo.yml:6:11: 'later' is asked later, so it has no answer here (only answers to earlier steps can be used here)"
    ]


def test_condition_syntax_error_position(tmp_path: Path) -> None:
    out = problems(tmp_path, "demo.yml", GOOD.replace("when: score <= 6", 'when: "score = 6"'))
    assert out == ["demo.yml:9:18: bad condition: unexpected character '=' (use == to compare)"]


def test_condition_with_unknown_choice_value(tmp_path: Path) -> None:
    out = problems(
        tmp_path,
        "demo.yml",
        """
        id: demo
        kind: churn
        title: Demo
        steps:
          - id: reason
            type: choice
            text: Why?
            choices:
              - {value: too_expensive, label: Too expensive}
              - {value: missing_features, label: Missing features}
          - id: price_detail
            when: reason == "too_expensiv"
            type: text
            text: Tell us more
        """,
    )
    assert (
        out[0]
        == "demo.yml:12:11: 'reason' has no choice with value 'too_expensiv' (did you mean 'too_expensive'?)"
    )


def test_comparing_scale_with_text_is_a_type_error(tmp_path: Path) -> None:
    out = problems(tmp_path, "demo.yml", GOOD.replace("when: score <= 6", "when: score == 'high'"))
    assert out == ["demo.yml:9:11: 'score' is a number scale; compare it with a number, not 'high'"]


def test_unreachable_step_by_condition(tmp_path: Path) -> None:
    out = problems(tmp_path, "demo.yml", GOOD.replace("when: score <= 6", "when: score > 10"))
    assert out == [
        "demo.yml:9:11: step 'why' can never be asked: its when: is never true (check the values and ranges it compares)"
    ]


def test_every_never_true_condition_is_reported(tmp_path: Path) -> None:
    text = GOOD.replace("when: score <= 6", "when: score > 10") + (
        "  - id: again\n    when: score < 0\n    type: text\n    text: Again?\n"
    )
    out = problems(tmp_path, "demo.yml", text)
    assert [o.split(": ", 1)[1] for o in out] == [
        "step 'why' can never be asked: its when: is never true (check the values and ranges it compares)",
        "step 'again' can never be asked: its when: is never true (check the values and ranges it compares)",
    ]


def test_unreachable_step_after_unconditional_end(tmp_path: Path) -> None:
    out = problems(
        tmp_path,
        "demo.yml",
        """
        id: demo
        kind: interview
        title: Demo
        steps:
          - id: ok
            type: yes_no
            text: Up for it?
          - id: bye
            type: message
            text: Bye
            end: true
          - id: never
            type: text
            text: Never asked
        """,
    )
    assert out == [
        "demo.yml:12:9: step 'never' can never be asked (step 'bye' always ends the flow before it)"
    ]


def test_bad_types_and_values(tmp_path: Path) -> None:
    out = problems(
        tmp_path,
        "demo.yml",
        """
        id: demo
        kind: survey
        title: Demo
        steps:
          - id: Score
            type: nps
            text: How likely?
          - id: r
            type: rating
            text: Rate
            min: 5
            max: 3
          - id: t
            type: text
            text: Say
            max_length: lots
        """,
    )
    joined = "\n".join(out)
    assert (
        "demo.yml:2:7: kind: Input should be 'welcome', 'microsurvey', 'churn' or 'interview'"
        in joined
    )
    assert (
        "demo.yml:5:9: id: 'Score' is not allowed here (use lower-case letters, digits and _ (e.g. why_low))"
        in joined
    )
    assert "demo.yml:8:5: max (3) must be greater than min (5)" in joined
    assert "demo.yml:16:17: max_length: Input should be a valid integer" in joined


def test_unknown_step_type(tmp_path: Path) -> None:
    out = problems(tmp_path, "demo.yml", GOOD.replace("type: text", "type: txt"))
    assert out == ["demo.yml:10:11: unknown step type 'txt' (did you mean 'text'?)"]


def test_empty_choices_and_missing_label(tmp_path: Path) -> None:
    out = problems(
        tmp_path,
        "demo.yml",
        """
        id: demo
        kind: microsurvey
        title: Demo
        steps:
          - id: pick
            type: choice
            text: Pick
            choices: []
          - id: pick2
            type: multi_choice
            text: Pick more
            choices:
              - {value: a}
        """,
    )
    assert any("demo.yml:8:5: choices: List should have at least 1 item" in p for p in out)
    assert any("demo.yml:13:9: missing required key 'label'" in p for p in out)


def test_missing_required_keys(tmp_path: Path) -> None:
    out = problems(
        tmp_path, "demo.yml", "id: demo\nkind: microsurvey\nsteps:\n  - id: a\n    type: nps\n"
    )
    assert "demo.yml:1:1: missing required key 'title'" in out
    out = problems(tmp_path, "demo.yml", GOOD.replace("    text: How likely?\n", ""))
    assert out == ["demo.yml:5:5: missing required key 'text'"]


def test_id_must_match_file_name(tmp_path: Path) -> None:
    out = problems(tmp_path, "other.yml", GOOD)
    assert out == ["other.yml:1:5: flow id 'demo' must match its file name (rename it to 'other')"]


def test_yaml_syntax_error(tmp_path: Path) -> None:
    out = problems(tmp_path, "demo.yml", "id: demo\nkind: [microsurvey\ntitle: x\n")
    assert len(out) == 1
    assert out[0].startswith("demo.yml:3:")
    assert "YAML syntax error" in out[0]


def test_yaml_aliases_refused(tmp_path: Path) -> None:
    text = GOOD.replace("title: Demo", "title: &t Demo\ndescription: *t")
    out = problems(tmp_path, "demo.yml", text)
    assert len(out) == 1
    assert "aliases (*name) are not allowed" in out[0]
    assert out[0].startswith("demo.yml:4:14:")


def test_duplicate_yaml_keys_refused(tmp_path: Path) -> None:
    out = problems(tmp_path, "demo.yml", GOOD.replace("title: Demo", "title: Demo\ntitle: Again"))
    assert out == ["demo.yml:4:1: YAML syntax error: duplicate key 'title'"]


def test_python_tags_refused(tmp_path: Path) -> None:
    out = problems(
        tmp_path,
        "demo.yml",
        GOOD.replace("title: Demo", "title: !!python/object/apply:os.system ['true']"),
    )
    assert len(out) == 1
    assert "YAML syntax error" in out[0]


@pytest.mark.parametrize("tag", ["!!binary aGVsbG8=", "!!set {a: null}", "!!omap [{a: 1}]"])
def test_tags_beyond_plain_values_are_refused_where_they_are(tmp_path: Path, tag: str) -> None:
    out = problems(tmp_path, "demo.yml", GOOD.replace("text: How likely?", f"text: {tag}"))
    assert len(out) == 1 and out[0].startswith("demo.yml:7:11: YAML syntax error: the YAML tag !!")


def test_a_date_like_text_stays_text(tmp_path: Path) -> None:
    flow = load_flow(
        write(tmp_path, "demo.yml", GOOD.replace("text: How likely?", "text: 2024-01-01")),
        root=tmp_path,
    )
    assert flow.steps[0].text.source == "2024-01-01"


def test_a_folder_named_like_a_flow_is_no_flow(tmp_path: Path) -> None:
    write(tmp_path, "demo.yml", GOOD)
    (tmp_path / "old.yml").mkdir()
    assert list(load_all(tmp_path)) == ["demo"]
    (tmp_path / "blocks" / "dir.yml").mkdir(parents=True)
    out = problems(
        tmp_path, "demo.yml", GOOD.replace("steps:\n", "steps:\n  - include: blocks/dir.yml\n")
    )
    assert out == [
        "demo.yml:5:5: included file 'blocks/dir.yml' not found (paths are relative to the flows folder)"
    ]


def test_flows_kept_under_a_folder_named_blocks_are_still_flows(tmp_path: Path) -> None:
    root = tmp_path / "blocks" / "project" / "flows"
    write(root, "demo.yml", GOOD)
    assert [(r.kind, r.ok) for r in validate_tree(root.resolve())] == [("flow", True)]
    assert [(r.kind, r.ok) for r in validate_tree((root / "demo.yml").resolve())] == [
        ("flow", True)
    ]


def test_validate_a_block_file_or_the_blocks_folder(tmp_path: Path) -> None:
    block = write(
        tmp_path, "blocks/mood.yml", "steps:\n  - {id: mood, type: csat, text: How is it}\n"
    )
    for target in (block, tmp_path / "blocks"):
        reports = validate_tree(target)
        assert [(r.path.split("/")[-1], r.kind, r.ok) for r in reports] == [
            ("mood.yml", "block", True)
        ], reports


@pytest.mark.parametrize(
    ("edit", "hint"),
    [
        (("title: Demo", "title: Demo\ndescription:\n\tx"), "(indent with spaces, not tabs)"),
        (("title: Demo", "title: 'Don't know'"), "wrap the whole text in double quotes)"),
        (
            ("text: How likely?", "text: {{score}}"),
            'put it in quotes, e.g. text: "{{score}} it is")',
        ),
        (
            ("text: How likely?", "text: Yes"),
            "(YAML read True as a yes/no value: put the text in quotes)",
        ),
        (("text: How likely?", "text: 12"), "(YAML read 12 as a number: put the text in quotes)"),
        (
            ("text: How likely?", "text: Note: be honest"),
            '(a ": " inside text? wrap the whole text in double quotes)',
        ),
        (
            ("text: How likely?", "text: {{score}} is your score"),
            "text starting with { (as {{...}} does)? wrap the whole text in double quotes)",
        ),
    ],
)
def test_common_yaml_slips_get_a_hint(tmp_path: Path, edit: tuple[str, str], hint: str) -> None:
    out = problems(tmp_path, "demo.yml", GOOD.replace(*edit))
    assert len(out) == 1 and out[0].endswith(hint), out


def test_positions_inside_folded_and_escaped_text_are_exact(tmp_path: Path) -> None:
    text = GOOD.replace("when: score <= 6", "when: >-\n      score <= 6 and\n      scroe >= 0")
    text = text.replace("text: Why {{score}}?", 'text: "Caf\\u00e9 \\"ok\\" {{scroe}}?"')
    out = problems(tmp_path, "demo.yml", text)
    assert [o.split(": unknown")[0] for o in out] == ["demo.yml:11:7", "demo.yml:13:31"]


def test_an_unclosed_quote_is_reported_where_it_opens(tmp_path: Path) -> None:
    out = problems(tmp_path, "demo.yml", GOOD.replace("title: Demo", 'title: "Demo'))
    assert out[0].startswith("demo.yml:3:8: YAML syntax error:"), out


def test_a_latin1_byte_is_reported_on_its_line(tmp_path: Path) -> None:
    (tmp_path / "demo.yml").write_bytes(b"id: demo\nkind: microsurvey\ntitle: Caf\xe9\n")
    with pytest.raises(FlowError) as info:
        load_flow(tmp_path / "demo.yml", root=tmp_path)
    assert str(info.value.problems[0]).endswith(
        "demo.yml:3:11: file is not UTF-8 text (save it as UTF-8 in your editor)"
    )


def test_size_limit(tmp_path: Path) -> None:
    out = problems(tmp_path, "demo.yml", GOOD + "# " + "x" * MAX_FILE_BYTES + "\n")
    assert out == ["demo.yml:1:1: file is larger than 256 KiB (split it with include:)"]


def test_nesting_limit(tmp_path: Path) -> None:
    deep = "[" * 40 + "]" * 40
    out = problems(
        tmp_path, "demo.yml", GOOD.replace("title: Demo", f"title: Demo\ndescription: {deep}")
    )
    assert len(out) == 1
    assert "nesting deeper than" in out[0]


def test_include_pulls_steps_and_reports_their_own_file(tmp_path: Path) -> None:
    write(
        tmp_path,
        "blocks/role.yml",
        """
        steps:
          - id: role
            type: choice
            text: Your role?
            save_as: role
            choices:
              - {value: pm, label: Product manager}
              - {value: eng, label: Engineer}
        """,
    )
    text = GOOD.replace("steps:\n", "steps:\n  - include: blocks/role.yml\n")
    flow = load_flow(write(tmp_path, "demo.yml", text), root=tmp_path)
    assert [s.id for s in flow.steps] == ["role", "score", "why"]
    # a problem inside the block is reported against the block file
    (tmp_path / "blocks/role.yml").write_text(
        (tmp_path / "blocks/role.yml").read_text().replace("save_as", "save_ass")
    )
    with pytest.raises(FlowError) as info:
        load_flow(tmp_path / "demo.yml", root=tmp_path)
    assert [str(p).removeprefix(f"{tmp_path.name}/") for p in info.value.problems] == [
        "blocks/role.yml:5:5: unknown key 'save_ass' (did you mean 'save_as'?)"
    ]


def test_a_block_leaning_on_the_including_flows_steps_is_refused_there_too(
    tmp_path: Path,
) -> None:
    """A block stands on its own (validated alone it is refused): included, it must not
    quietly start working because this flow happens to ask 'score' first."""
    write(
        tmp_path,
        "blocks/sorry.yml",
        """
        steps:
          - id: sorry
            type: text
            text: Sorry about that. What went wrong?
            when: score <= 6
        """,
    )
    text = GOOD.replace(
        "    text: Why {{score}}?\n", "    text: Why {{score}}?\n  - include: blocks/sorry.yml\n"
    )
    with pytest.raises(FlowError) as info:
        load_flow(write(tmp_path, "demo.yml", text), root=tmp_path)
    problems = [str(p).removeprefix(f"{tmp_path.name}/") for p in info.value.problems]
    assert len(problems) == 1 and problems[0].startswith("blocks/sorry.yml:5:11:"), problems
    assert "unknown name 'score'" in problems[0]


def test_editing_a_block_changes_the_flow_version(tmp_path: Path) -> None:
    block = write(
        tmp_path, "blocks/b.yml", "steps:\n  - id: hello\n    type: message\n    text: Hello\n"
    )
    path = write(
        tmp_path, "demo.yml", GOOD.replace("steps:\n", "steps:\n  - include: blocks/b.yml\n")
    )
    before = load_flow(path, root=tmp_path).hash
    block.write_text(block.read_text().replace("Hello", "Hello again"))
    assert load_flow(path, root=tmp_path).hash != before


def test_include_cycle(tmp_path: Path) -> None:
    write(tmp_path, "blocks/a.yml", "steps:\n  - include: blocks/b.yml\n")
    write(tmp_path, "blocks/b.yml", "steps:\n  - include: blocks/a.yml\n")
    out = problems(
        tmp_path, "demo.yml", GOOD.replace("steps:\n", "steps:\n  - include: blocks/a.yml\n")
    )
    assert out == ["blocks/b.yml:2:5: include cycle: blocks/a.yml -> blocks/b.yml -> blocks/a.yml"]


def test_include_missing_or_outside_root(tmp_path: Path) -> None:
    out = problems(
        tmp_path, "demo.yml", GOOD.replace("steps:\n", "steps:\n  - include: blocks/nope.yml\n")
    )
    assert out == [
        "demo.yml:5:5: included file 'blocks/nope.yml' not found (paths are relative to the flows folder)"
    ]
    out = problems(
        tmp_path, "demo.yml", GOOD.replace("steps:\n", "steps:\n  - include: ../secrets.yml\n")
    )
    assert out == ["demo.yml:5:5: include path '../secrets.yml' is outside the flows folder"]


def test_pipe_naming_unknown_step(tmp_path: Path) -> None:
    out = problems(tmp_path, "demo.yml", GOOD.replace("Why {{score}}?", "Why {{scor}}?"))
    assert out == ["demo.yml:11:17: unknown name 'scor' (did you mean 'score'?)"]


def test_email_needs_consent_line(tmp_path: Path) -> None:
    out = problems(tmp_path, "demo.yml", GOOD + "  - id: mail\n    type: email\n    text: Email?\n")
    assert out == ["demo.yml:12:5: missing required key 'consent'"]


def test_every_problem_is_reported_not_just_the_first(tmp_path: Path) -> None:
    text = GOOD.replace("title: Demo", "title: Demo\ncolour: red").replace(
        "type: text", "type: txt"
    )
    out = problems(tmp_path, "demo.yml", text)
    assert len(out) == 2


def test_validate_tree_checks_flows_blocks_and_config(tmp_path: Path) -> None:
    write(tmp_path, "demo.yml", GOOD)
    write(tmp_path, "blocks/b.yml", "steps:\n  - id: hello\n    type: message\n    text: Hi\n")
    write(
        tmp_path,
        "segments.yml",
        "dimensions:\n  needs:\n    segments: [price, quality]\n    keywords: {price: [cheap]}\n",
    )
    write(tmp_path, "personas.yml", "personas:\n  - {id: saver, name: The saver, colour: blue}\n")
    reports = {r.path: r for r in validate_tree(tmp_path)}
    root = tmp_path.name
    assert reports[f"{root}/demo.yml"].ok
    assert reports[f"{root}/blocks/b.yml"].ok
    assert reports[f"{root}/segments.yml"].ok
    bad = reports[f"{root}/personas.yml"]
    assert not bad.ok
    assert str(bad.problems[0]).startswith(f"{root}/personas.yml:2:34: unknown key 'colour'")


def test_segments_keywords_must_name_known_segments(tmp_path: Path) -> None:
    write(
        tmp_path,
        "segments.yml",
        "dimensions:\n  needs:\n    segments: [price]\n    keywords: {quality: [best]}\n",
    )
    (report,) = validate_tree(tmp_path)
    assert "keywords for unknown segment(s) quality" in str(report.problems[0])


def test_tags_must_be_declared_in_segments_yml(tmp_path: Path) -> None:
    """A typo in a tag would file people into a segment nobody reports on."""
    write(
        tmp_path,
        "segments.yml",
        "dimensions:\n  needs:\n    segments: [price, quality]\n"
        "  nps:\n    segments: [promoter, detractor]\n",
    )
    write(
        tmp_path,
        "pick.yml",
        """\
id: pick
kind: microsurvey
title: Pick
steps:
  - id: value
    type: choice
    text: What matters?
    choices:
      - {value: price, label: Price, tags: {needs:prize: 2}}
      - {value: quality, label: Quality, tags: needs:quality}
  - id: score
    type: nps
    text: How likely?
    tags:
      - {when: score >= 9, add: nps:promotor}
      - {when: score <= 6, add: nsp:detractor}
""",
    )
    reports = {r.path.rsplit("/", 1)[-1]: r for r in validate_tree(tmp_path)}
    problems = [str(p) for p in reports["pick.yml"].problems]
    assert len(problems) == 3
    # each at the tag as written: a mapping key, a plain value
    assert "pick.yml:9:45: step 'value' tags needs:prize" in problems[0]
    assert "did you mean 'price'?" in problems[0]
    assert "pick.yml:15:33: step 'score' tags nps:promotor" in problems[1]
    assert "'promoter'" in problems[1]
    assert "pick.yml:16:33: step 'score' tags nsp:detractor" in problems[2]
    assert "did you mean 'nps'?" in problems[2]
    flows, broken = load_each(tmp_path)  # what validate refuses is not run (nor stored) either
    assert "pick" not in flows and [str(p) for p in broken[tmp_path / "pick.yml"]] == problems
    write(tmp_path, "pick.yml", (tmp_path / "pick.yml").read_text().replace("prize", "price"))
    fixed = (tmp_path / "pick.yml").read_text()
    write(tmp_path, "pick.yml", fixed.replace("promotor", "promoter").replace("nsp:", "nps:"))
    assert all(r.ok for r in validate_tree(tmp_path))


def test_undeclared_tags_in_a_block_are_found_in_the_block(tmp_path: Path) -> None:
    """A block is checked against segments.yml on its own (`parley validate blocks/x.yml`)
    and where a flow includes it, each time at the tag's own line in the block."""
    write(tmp_path, "segments.yml", "dimensions:\n  needs:\n    segments: [price, quality]\n")
    write(
        tmp_path,
        "blocks/why.yml",
        """\
steps:
  - id: reasons
    type: multi_choice
    text: Reasons?
    choices:
      - value: cost
        label: Cost
        tags: [needs:price, needs:prise]
      - {value: make, label: Make, tags: needs:quality}
""",
    )
    write(
        tmp_path,
        "uses.yml",
        GOOD.replace("id: demo", "id: uses").replace(
            "steps:\n", "steps:\n  - include: blocks/why.yml\n", 1
        ),
    )
    expected = (
        "blocks/why.yml:8:29: step 'reasons' tags needs:prise, which segments.yml does not declare"
    )
    block = validate_tree(tmp_path / "blocks" / "why.yml")
    assert [expected in str(p) for report in block for p in report.problems] == [True]
    reports = {r.path.rsplit("/", 1)[-1]: r for r in validate_tree(tmp_path)}
    assert [expected in str(p) for p in reports["uses.yml"].problems] == [True]
    assert [expected in str(p) for p in reports["why.yml"].problems] == [True]
    flows, broken = load_each(tmp_path)
    assert "uses" not in flows and len(broken[tmp_path / "uses.yml"]) == 1


def test_load_all_collects_problems_from_every_file(tmp_path: Path) -> None:
    write(tmp_path, "a.yml", GOOD.replace("id: demo", "id: a").replace("type: text", "type: txt"))
    write(
        tmp_path,
        "b.yml",
        GOOD.replace("id: demo", "id: b").replace("kind: microsurvey", "kind: nope"),
    )
    write(tmp_path, "themes.yml", "themes: {}\n")
    with pytest.raises(FlowError) as info:
        load_all(tmp_path)
    files = {p.file for p in info.value.problems}
    assert files == {"a.yml", "b.yml"} or files == {
        f"{tmp_path.name}/a.yml",
        f"{tmp_path.name}/b.yml",
    }


def test_bad_duration_is_a_located_error(tmp_path: Path) -> None:
    out = problems(
        tmp_path, "demo.yml", GOOD.replace("title: Demo", "title: Demo\nexpires_after: 0d")
    )
    assert out == [
        "demo.yml:4:16: expires_after: '0d' is not a duration; write e.g. 30m, 2h, 7d or 2w"
    ]
    out = problems(
        tmp_path, "demo.yml", GOOD.replace("title: Demo", "title: Demo\nexpires_after: 999999d")
    )
    assert out == [
        "demo.yml:4:16: expires_after: '999999d' is longer than ten years (3660d); "
        "leave it out for no limit"
    ]


def test_bad_tag_is_one_clear_error(tmp_path: Path) -> None:
    text = GOOD.replace(
        "    text: How likely?\n",
        "    text: How likely?\n    tags: [{when: 'score >= 9', add: NPS-promoter}]\n",
    )
    out = problems(tmp_path, "demo.yml", text)
    assert out == [
        "demo.yml:8:38: tags.0.add: 'NPS-promoter' is not a tag (a tag is dimension:segment in lower case, e.g. needs:price)"
    ]


def test_multi_choice_compared_with_equals(tmp_path: Path) -> None:
    text = """
    id: demo
    kind: microsurvey
    title: Demo
    steps:
      - id: picks
        type: multi_choice
        text: Pick
        choices:
          - {value: a, label: A}
          - {value: b, label: B}
      - id: why
        when: picks == "a"
        type: text
        text: Why A?
    """
    out = problems(tmp_path, "demo.yml", text)
    assert (
        out[0]
        == "demo.yml:12:11: 'picks' is a list of picks, so == never matches one value (write \"a\" in picks)"
    )


def costly_steps(count: int) -> tuple[str, str]:
    """Four scores, then ``count`` questions whose condition only the last of the 11^4
    combinations of answers makes true (the never-true check tries them all)."""
    scores = "".join(f"  - {{id: s{n}, type: nps, text: 'Score {n}'}}\n" for n in range(4))
    when = " and ".join(f"s{n} == 10" for n in range(4))
    asks = "".join(
        f'  - {{id: t{n}, type: text, text: Why, required: false, when: "{when}"}}\n'
        for n in range(count)
    )
    return scores, asks


def count_tries(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the answer combinations the never-true check tries (``[0]``)."""
    from bot.flow import conditions

    tries = [0]
    answers_for = conditions.truthy_in  # called once per combination tried

    def counted(*args: Any, **kwargs: Any) -> Any:
        tries[0] += 1
        return answers_for(*args, **kwargs)

    monkeypatch.setattr(conditions, "truthy_in", counted)
    return tries


def test_never_true_checks_have_one_budget_per_flow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every load (chat, results, each reload while serving) checks every condition: many
    long ones over several scores took minutes. Past the budget a condition is trusted."""
    from bot.flow import loader

    scores, asks = costly_steps(40)
    write(tmp_path, "many.yml", f"id: many\nkind: microsurvey\ntitle: Many\nsteps:\n{scores}{asks}")
    tries = count_tries(monkeypatch)
    flow = load_flow(tmp_path / "many.yml", root=tmp_path)
    assert flow.question_count == 44
    assert tries[0] <= loader.MAX_ENUMERATION_PER_FLOW  # not 40 x 11^4 (585,640)

    # conditions true at once cost one try each: a never-true one after them is still found
    easy = " and ".join(f"s{n} >= 0" for n in range(4))
    never = " and ".join(f"s{n} > 10" for n in range(4))
    quick = "".join(
        f'  - {{id: e{n}, type: text, text: Why, required: false, when: "{easy}"}}\n'
        for n in range(20)
    )
    bad = f'  - {{id: bad, type: text, text: Why, when: "{never}"}}\n'
    write(
        tmp_path,
        "many.yml",
        f"id: many\nkind: microsurvey\ntitle: Many\nsteps:\n{scores}{quick}{bad}",
    )
    with pytest.raises(FlowError) as info:
        load_flow(tmp_path / "many.yml", root=tmp_path)
    assert "step 'bad' can never be asked" in str(info.value)


def test_a_misshapen_step_is_not_followed_by_false_errors_about_the_outro(tmp_path: Path) -> None:
    write(
        tmp_path,
        "cascade.yml",
        """\
id: cascade
kind: microsurvey
title: Cascade
outro: Thanks for {{score}} and {{why}}
steps:
  - id: score
    type: nps
    text: How likely?
    lables: {min: No, max: Yes}
  - id: why
    type: text
    text: Why?
""",
    )
    with pytest.raises(FlowError) as info:
        load_flow(tmp_path / "cascade.yml", root=tmp_path)
    problems = [str(p) for p in info.value.problems]
    assert len(problems) == 1 and "unknown key 'lables'" in problems[0], problems


def test_an_unquoted_choice_value_is_named_as_one(tmp_path: Path) -> None:
    flow = """\
id: demo
kind: microsurvey
title: Demo
steps:
  - id: plan
    type: choice
    text: Plan?
    choices: [{value: pro, label: Pro}, {value: basic, label: Basic}]
  - id: why
    type: text
    text: Why?
    when: plan == pro
"""
    out = problems(tmp_path, "demo.yml", flow)
    assert out == [
        "demo.yml:12:19: unknown name 'pro' ('pro' is a choice of plan: quote it, \"pro\")"
    ]


def test_next_gets_how_branching_works_not_a_key_already_there(tmp_path: Path) -> None:
    out = problems(
        tmp_path,
        "demo.yml",
        GOOD.replace("    type: text\n", "    type: text\n    next: score\n", 1),
    )
    assert len(out) == 1 and "unknown key 'next'" in out[0], out
    assert "steps run in order" in out[0] and "when:" in out[0]
    assert "did you mean" not in out[0]


def test_asking_for_a_flow_broken_by_its_block_says_why(tmp_path: Path) -> None:
    from bot.errors import FlowNotFound
    from bot.services.catalog import FlowCatalog

    write(tmp_path, "ok.yml", GOOD.replace("id: demo", "id: ok"))
    write(tmp_path, "blocks/extra.yml", "steps:\n  - {id: more, type: text, txt: More?}\n")
    text = GOOD.replace("id: demo", "id: incl").replace(
        "steps:\n", "steps:\n  - include: blocks/extra.yml\n"
    )
    write(tmp_path, "incl.yml", text)
    catalog = FlowCatalog(tmp_path)
    with pytest.raises(FlowNotFound, match=r"the flow 'incl' does not load: .*extra.yml:2:"):
        catalog.get("incl")


def test_a_flow_and_the_blocks_it_includes_share_one_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A block is checked on its own and within the flow: on one budget, not one each."""
    from bot.flow import loader

    scores, asks = costly_steps(12)
    write(tmp_path, "blocks/costly.yml", f"steps:\n{scores}{asks}")
    write(
        tmp_path, "demo.yml", GOOD.replace("steps:\n", "steps:\n  - include: blocks/costly.yml\n")
    )
    tries = count_tries(monkeypatch)
    load_flow(tmp_path / "demo.yml", root=tmp_path)
    assert tries[0] <= loader.MAX_ENUMERATION_PER_FLOW


def test_a_block_problem_is_reported_once_with_the_hint_for_a_block(tmp_path: Path) -> None:
    write(
        tmp_path,
        "blocks/b.yml",
        'steps:\n  - {id: more, type: text, text: More, when: "scor > 5"}\n',
    )
    write(
        tmp_path,
        "demo.yml",
        GOOD.replace(
            "    text: Why {{score}}?\n", "    text: Why {{score}}?\n  - include: blocks/b.yml\n"
        ),
    )
    with pytest.raises(FlowError) as info:
        load_flow(tmp_path / "demo.yml", root=tmp_path)
    problems = [str(p) for p in info.value.problems if "file name" not in p.message]
    assert len(problems) == 1 and "unknown name 'scor'" in problems[0], problems
    assert "did you mean 'score'" not in problems[0]  # the flow's step is no help in a block


def test_what_would_silently_do_nothing_is_refused_at_its_line(tmp_path: Path) -> None:
    """An anonymous flow keeps no tags and no profile, and an email step is always optional:
    writing otherwise is a mistake the author should hear about, not discover in results."""
    text = """\
id: demo
kind: microsurvey
title: Demo
anonymous: true
steps:
  - id: plan
    type: choice
    text: Plan?
    save_as: plan
    choices:
      - {value: free, label: Free, tags: needs:price}
      - {value: pro, label: Pro}
  - id: score
    type: nps
    text: How likely?
    tags: [{when: score >= 9, add: nps:promoter}]
  - id: email
    type: email
    text: Email?
    consent: I agree.
    required: true
"""
    assert problems(tmp_path, "demo.yml", text) == [
        "demo.yml:9:5: step 'plan' has save_as:, but an anonymous flow keeps nothing about "
        "the person (no tags, no profile) (remove save_as:, or anonymous: true)",
        "demo.yml:11:36: step 'plan' has tags:, but an anonymous flow keeps nothing about "
        "the person (no tags, no profile) (remove tags:, or anonymous: true)",
        "demo.yml:16:5: step 'score' has tags:, but an anonymous flow keeps nothing about "
        "the person (no tags, no profile) (remove tags:, or anonymous: true)",
        "demo.yml:21:15: step 'email' cannot be required: an email step is always optional "
        "(the person may decline the consent; remove required: true)",
    ]
    quoted = text.replace("    required: true\n", '    required: "yes"\n')
    assert "cannot be required" in problems(tmp_path, "demo.yml", quoted)[-1]
    named = text.replace("anonymous: true\n", "").replace("    required: true\n", "")
    flow = load_flow(write(tmp_path, "demo.yml", named), root=tmp_path)
    assert flow.step("plan").spec.save_as == "plan" and not flow.anonymous
    # a version stored before these checks existed still loads (its conversations go on)
    stored = dict(flow.definition, anonymous=True)
    assert flow_from_definition(stored).anonymous


def test_an_anonymous_flow_may_include_a_block_that_tags(tmp_path: Path) -> None:
    """Other flows use the block's tags; here they do nothing, and the flow is not refused
    for what it cannot change."""
    write(tmp_path, "segments.yml", "dimensions:\n  needs:\n    segments: [price]\n")
    write(
        tmp_path,
        "blocks/why.yml",
        "steps:\n  - id: why\n    type: choice\n    text: Why?\n    save_as: why\n"
        "    choices:\n      - {value: cost, label: Cost, tags: needs:price}\n"
        "      - {value: other, label: Other}\n",
    )
    write(
        tmp_path,
        "pulse.yml",
        "id: pulse\nkind: microsurvey\ntitle: Pulse\nanonymous: true\nsteps:\n"
        "  - include: blocks/why.yml\n",
    )
    assert load_flow(tmp_path / "pulse.yml", root=tmp_path).anonymous


def test_a_segments_file_without_dimensions_says_so(tmp_path: Path) -> None:
    write(tmp_path, "segments.yml", "dimensions: {}\n")
    text = GOOD.replace(
        "    text: How likely?\n", "    text: How likely?\n    tags: [{add: nps:fan}]\n"
    )
    (found,) = problems(tmp_path, "demo.yml", text)
    assert "segments.yml declares no dimensions yet; or declare it in segments.yml" in found


def test_files_parley_would_never_read_are_reported(tmp_path: Path) -> None:
    """A flow saved in a subfolder, or segments.yaml for segments.yml, would silently do
    nothing: validate says so, and the server does not take segments.yaml for a flow."""
    write(tmp_path, "demo.yml", GOOD)
    write(tmp_path, "drafts/new.yml", GOOD.replace("id: demo", "id: new"))
    write(tmp_path, "segments.yaml", "dimensions:\n  needs:\n    segments: [price]\n")
    problems_by_file = {
        r.path.split(tmp_path.name + "/", 1)[-1]: [str(p) for p in r.problems]
        for r in validate_tree(tmp_path)
    }
    assert problems_by_file["demo.yml"] == []
    assert "rename it to segments.yml" in problems_by_file["segments.yaml"][0]
    assert "not read: flows are the .yml files at the top" in problems_by_file["drafts/new.yml"][0]
    flows, broken = load_each(tmp_path)
    assert list(flows) == ["demo"] and broken == {}
