"""Pure Block Kit rendering (no Slack) and the installation-store tables' equivalence."""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa
from slack_fake import id_problems
from slack_sdk.errors import SlackObjectFormationError
from slack_sdk.models.blocks import Block, BlockElement, Option
from slack_sdk.models.views import View
from slack_sdk.oauth.installation_store.sqlalchemy import SQLAlchemyInstallationStore
from slack_sdk.oauth.state_store.sqlalchemy import SQLAlchemyOAuthStateStore

from bot.channels.slack import blocks
from bot.channels.slack.typed import typed
from bot.engine.messages import Ask, ChoiceOption, End, InputSpec, Say
from bot.store import slack as store


def test_long_text_is_cut_within_limits_and_escaped() -> None:
    ask = Ask(
        "q",
        "<!channel> " + "x" * 5000,
        InputSpec(
            "choice", True, choices=tuple(ChoiceOption(f"v{i}", "L" * 200) for i in range(100))
        ),
    )
    rendered = blocks.ask_blocks(ask, "c" * 32)
    assert len(rendered) <= blocks.MAX_BLOCKS_MESSAGE
    assert len(rendered[0]["text"]["text"]) <= blocks.MAX_SECTION_TEXT
    assert (
        "<!channel>" not in json.dumps(rendered)
        and "&lt;!channel&gt;" in rendered[0]["text"]["text"]
    )
    select = rendered[1]["elements"][0]
    assert select["type"] == "static_select" and len(select["options"]) == 100
    assert all(
        len(o["text"]["text"]) <= blocks.MAX_OPTION_TEXT
        and len(o["value"]) <= blocks.MAX_OPTION_VALUE
        for o in select["options"]
    )


def test_scale_button_rows_and_big_scales() -> None:
    nps = blocks.ask_blocks(
        Ask("s", "NPS", InputSpec("nps", True, min=0, max=10, labels=("Low", "High"))), "c1"
    )
    assert len(nps[1]["elements"]) == 11 and nps[2]["type"] == "context"
    big = blocks.ask_blocks(
        Ask("s", "R", InputSpec("rating", False, min=0, max=100, labels=(None, None))), "c1"
    )
    select = big[1]["elements"][0]
    assert (
        "option_groups" in select and sum(len(g["options"]) for g in select["option_groups"]) == 101
    )
    assert big[1]["elements"][-1]["text"]["text"] == "Skip"


def test_many_multi_choice_uses_a_multi_select() -> None:
    spec = InputSpec(
        "multi_choice",
        True,
        choices=tuple(ChoiceOption(f"v{i}", f"L{i}") for i in range(12)),
        min_picks=1,
        max_picks=3,
    )
    rendered = blocks.ask_blocks(Ask("m", "Pick", spec), "c1")
    assert rendered[1]["elements"][0]["type"] == "multi_static_select"
    assert rendered[1]["elements"][0]["max_selected_items"] == 3


def test_render_reply_groups_says_and_offers_opt_out() -> None:
    outputs = [
        Say("Hi"),
        Say("Two questions"),
        Ask("q", "Yes?", InputSpec("yes_no", True)),
        End("completed", "Bye"),
    ]
    messages = blocks.render_reply(outputs, "c1", offer_opt_out=True)
    assert [m.step for m in messages] == [None, "q", None]
    assert messages[0].blocks[-1]["elements"][0]["action_id"] == blocks.OPT_OUT
    assert blocks.decode(messages[1].blocks[1]["elements"][0]["value"]) == ("c1", True)


def test_long_words_before_a_question_go_out_as_several_messages_slack_accepts() -> None:
    """Each block within its limit is not enough: Slack refuses a message whose blocks hold
    much over ~12,000 characters together (msg_blocks_too_long), and the question behind the
    words would never be posted."""
    long_intro = "Read this & that. " * 170  # ~3,000 characters, more once escaped
    outputs: list[Any] = [Say(long_intro) for _ in range(4)]
    outputs.append(Ask("q", "Yes?", InputSpec("yes_no", True)))
    messages = blocks.render_reply(outputs, "c1", offer_opt_out=True)
    said = [m for m in messages if m.step is None]
    assert len(said) >= 2 and messages[-1].step == "q"
    for message in said:
        text = sum(len(b["text"]["text"]) for b in message.blocks if b["type"] == "section")
        assert text <= blocks.MAX_MESSAGE_TEXT
    whole = "".join(b["text"]["text"] for m in said for b in m.blocks if b["type"] == "section")
    assert whole.count("Read this &amp; that.") == 4 * 170  # nothing lost between them
    assert said[0].blocks[-1]["elements"][0]["action_id"] == blocks.OPT_OUT  # once, first


def test_modal_title_and_values_are_bounded() -> None:
    ask = Ask("t", "Tell us" * 1000, InputSpec("text", True, max_length=10000))
    view = blocks.form_modal(
        ask, "c1", channel="D1", ts="1.2", title="A very long flow title indeed"
    )
    assert len(view["title"]["text"]) <= blocks.MAX_MODAL_TITLE
    assert view["blocks"][0]["element"]["max_length"] == 3000
    assert len(view["blocks"][0]["label"]["text"]) <= blocks.MAX_LABEL


def _shape(table: sa.Table) -> tuple:
    columns = tuple((c.name, repr(c.type), c.nullable, c.primary_key) for c in table.columns)
    indexes = tuple(sorted((i.name, tuple(c.name for c in i.columns)) for i in table.indexes))
    return columns, indexes


def test_installation_tables_match_slack_sdk() -> None:
    meta = sa.MetaData()
    assert _shape(store.slack_installations) == _shape(
        SQLAlchemyInstallationStore.build_installations_table(meta, "slack_installations")
    )
    assert _shape(store.slack_bots) == _shape(
        SQLAlchemyInstallationStore.build_bots_table(meta, "slack_bots")
    )
    assert _shape(store.slack_oauth_states) == _shape(
        SQLAlchemyOAuthStateStore.build_oauth_states_table(meta, "slack_oauth_states")
    )


def test_answered_question_reads_as_it_was_posted_not_escaped_twice() -> None:
    ask = Ask("q", "Q&A: is <b> > <a>?", InputSpec("yes_no", True))
    posted = blocks.ask_blocks(ask, "c1")[0]["text"]["text"]  # what the clicked message holds
    assert posted == "Q&amp;A: is &lt;b&gt; &gt; &lt;a&gt;?"
    answered = blocks.answered_blocks(posted, "Yes & no")
    assert answered[0] == {"type": "section", "text": {"type": "mrkdwn", "text": posted}}
    assert "&amp;amp;" not in json.dumps(answered)
    assert answered[1]["elements"][0]["text"] == "✓ Your answer: Yes &amp; no"  # plain: escaped
    # Too long: cut to the section limit without leaving half an entity behind.
    long = blocks.answered_blocks("x" + "&amp;" * 1000, "4")[0]["text"]["text"]
    assert len(long) <= blocks.MAX_SECTION_TEXT and long.endswith("&amp;…")


# --- every rendering checked by slack_sdk's own Block Kit models ------------------------------

LONG = ("Ünïcödé & <b> *bold* " * 200)[:3200]  # over every limit, mrkdwn-hostile


def _slack_problems(obj: Any, where: str) -> list[str]:
    """What slack_sdk's models refuse in a block, an element or an option, at any depth
    (their own validation looks one level down only)."""
    problems: list[str] = []
    if isinstance(obj, dict):
        checks: list[Any] = [Option(**o) for o in obj.get("options") or []]
        if obj.get("type") in ELEMENTS:
            checks.append(BlockElement.parse(obj))
        for model in checks:
            try:
                model.validate_json()
            except SlackObjectFormationError as err:
                problems.append(f"{where}: {err}")
        for value in obj.values():
            problems += _slack_problems(value, where)
    elif isinstance(obj, list):
        for value in obj:
            problems += _slack_problems(value, where)
    return problems


ELEMENTS = {
    "button",
    "static_select",
    "multi_static_select",
    "checkboxes",
    "plain_text_input",
    "email_text_input",
}


def _every_kind() -> list[Ask]:
    labels = (LONG, LONG)
    few = tuple(ChoiceOption(f"v{i}", LONG) for i in range(5))
    many = tuple(ChoiceOption(f"v{i}", LONG) for i in range(100))
    return [
        Ask("nps", LONG, InputSpec("nps", False, min=0, max=10, labels=labels), help=LONG),
        Ask("csat", LONG, InputSpec("csat", True, min=1, max=5, labels=labels)),
        Ask("ces", LONG, InputSpec("ces", True, min=1, max=7, labels=labels)),
        Ask("rating", LONG, InputSpec("rating", True, min=0, max=100, labels=labels)),
        Ask("few", LONG, InputSpec("choice", False, choices=few)),
        Ask("many", LONG, InputSpec("choice", True, choices=many)),
        Ask("multi", LONG, InputSpec("multi_choice", True, choices=few[:4], max_picks=2)),
        Ask("multi_many", LONG, InputSpec("multi_choice", True, choices=many, min_picks=1)),
        Ask("yn", LONG, InputSpec("yes_no", False)),
        Ask("note", LONG, InputSpec("text", False, max_length=5000, placeholder=LONG)),
        Ask("mail", LONG, InputSpec("email", True, consent=LONG)),
        Ask("mail_short", LONG, InputSpec("email", True, consent="I agree to be contacted")),
    ]


def test_every_step_kind_passes_slack_sdk_block_kit_validation() -> None:
    problems: list[str] = []
    conversation = "c" * 32
    outputs = [Say(LONG), *_every_kind(), End("completed", LONG)]
    for message in blocks.render_reply(outputs, conversation, offer_opt_out=True):
        assert len(message.blocks) <= blocks.MAX_BLOCKS_MESSAGE
        for block in message.blocks:
            try:
                Block.parse(block).validate_json()  # type: ignore[union-attr]
            except SlackObjectFormationError as err:
                problems.append(f"message {message.step}: {err}")
            problems += _slack_problems(block, f"message {message.step}")
        problems += [f"message {message.step}: {p}" for p in id_problems(message.blocks)]
    for ask in _every_kind():
        if ask.input.kind in ("text", "email"):
            view = blocks.form_modal(ask, conversation, channel="D1", ts="1.2", title=LONG)
            try:
                View(**view).validate_json()
            except SlackObjectFormationError as err:
                problems.append(f"modal {ask.step}: {err}")
            problems += _slack_problems(view, f"modal {ask.step}")
            problems += [f"modal {ask.step}: {p}" for p in id_problems(view["blocks"])]
    assert problems == []


def test_a_long_consent_line_is_shown_whole_beside_an_i_agree_box() -> None:
    consent = "I agree that Acme may email me about a 30-minute interview and keep my address."
    view = blocks.form_modal(
        Ask("mail", "Your email?", InputSpec("email", True, consent=consent)),
        "c" * 32,
        channel="D1",
        ts="1.2",
    )
    texts = json.dumps(view["blocks"])
    assert consent in texts  # in full, in a section
    box = next(b for b in view["blocks"] if b.get("block_id") == blocks.CONSENT_BLOCK)
    assert box["element"]["options"][0]["text"]["text"] == "I agree"


def test_the_pick_hint_agrees_with_pick_all_that_apply() -> None:
    assert blocks.pick_hint(1, 8, 8) == "Pick one or more"
    assert blocks.pick_hint(0, 8, 8) == "Pick any that apply"
    assert blocks.pick_hint(2, 8, 8) == "Pick at least 2"
    assert blocks.pick_hint(1, 3, 8) == "Pick 1 to 3"
    assert blocks.pick_hint(0, 3, 8) == "Pick up to 3"
    assert blocks.pick_hint(2, 2, 8) == "Pick 2"


@pytest.mark.parametrize(
    ("sent", "written"),
    [
        ("R&amp;D", "R&D"),
        ("a &lt;b&gt; &amp;lt;", "a <b> &lt;"),  # unescaped once: a typed "&lt;" stays
        ("<https://x.io>", "https://x.io"),
        ("<https://x.io/a?b=1&amp;c=2|x.io/a?b=1&amp;c=2>", "x.io/a?b=1&c=2"),
        ("<mailto:a@b.co>", "a@b.co"),
        ("<@U1> and <#C1|general>", "@U1 and #general"),
        ("<!here> <!subteam^S1|@research> <!date^1|Monday>", "@here @research Monday"),
        ("no markup at all", "no markup at all"),
    ],
)
def test_typed_text_is_what_the_person_wrote(sent: str, written: str) -> None:
    assert typed(sent) == written
