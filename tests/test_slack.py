"""The Slack channel end to end against a local fake Slack (tests/slack_fake.py): signed
requests with real payload shapes go to ``/slack/events``; the real slack_sdk client talks to
the fake through ``SLACK_API_URL``."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import slack_fake
from aiohttp.test_utils import TestClient, TestServer
from conftest import FLOWS
from slack_fake import (
    FakeSlack,
    block_actions,
    click,
    dm_event,
    event_body,
    interactive_body,
    sign,
    slash_command,
)
from slack_sdk.errors import SlackApiError
from sqlalchemy import func, select, update

from bot.app import DATABASE, create_app
from bot.channels.slack.app import SLACK
from bot.channels.slack.blocks import escape
from bot.channels.slack.recovery import recover_once
from bot.config import load_settings
from bot.errors import Busy
from bot.store import slack as store
from bot.store.models import Answer, Conversation, Event, Respondent
from bot.store.slack import SlackInbox, SlackMessage, slack_installations

WELCOME = """\
id: welcome
kind: welcome
title: Welcome
trigger: {first_contact: true}
intro: Hi {{respondent.first_name or "there"}}!
steps:
  - id: role
    type: choice
    text: What is your role?
    choices:
      - {value: eng, label: Engineering}
      - {value: pm, label: Product}
outro: Thanks, {{respondent.first_name or "friend"}}.
"""

EVERYTHING = """\
id: everything
kind: microsurvey
title: Every step type
steps:
  - {id: nps, type: nps, text: "Recommend us?"}
  - {id: csat, type: csat, text: "Satisfied?"}
  - {id: ces, type: ces, text: "Easy?"}
  - {id: rate, type: rating, min: 1, max: 20, text: Rate 1 to 20}
  - id: few
    type: choice
    text: Pick one
    choices: [{value: a, label: A}, {value: b, label: B}]
  - id: many
    type: choice
    text: Pick one of many
    choices: [{value: c1, label: C1}, {value: c2, label: C2}, {value: c3, label: C3}, {value: c4, label: C4}, {value: c5, label: C5}, {value: c6, label: C6}]
  - id: multi
    type: multi_choice
    text: Pick some
    min_picks: 1
    choices: [{value: x, label: X}, {value: y, label: Y}, {value: z, label: Z}]
  - {id: yn, type: yes_no, text: "Yes or no?"}
  - {id: note, type: text, text: Tell us more, required: false}
  - {id: mail, type: email, text: "Your email?", consent: I agree to be contacted about my answers.}
outro: Done.
"""

SECRET = "secret"

STEPS = """\
id: steps
kind: microsurvey
title: Steps
intro: Hello from the steps survey.
steps:
  - {id: q1, type: yes_no, text: "First?"}
  - {id: between, type: message, text: "Thanks - one more."}
  - {id: q2, type: yes_no, text: "Second?"}
"""


def _long(word: str) -> str:
    return (f"{word} " * (2990 // (len(word) + 1))).strip()


# ~12,000 characters before the first question: more than one Slack message holds
LONG = f"""\
id: long
kind: microsurvey
title: Long
intro: {_long("Alpha")}
steps:
  - {{id: b, type: message, text: {_long("Bravo")}}}
  - {{id: c, type: message, text: {_long("Charlie")}}}
  - {{id: d, type: message, text: {_long("Delta")}}}
  - {{id: q1, type: yes_no, text: "First?"}}
"""


@pytest.fixture
def flows(tmp_path: Path) -> Path:
    root = tmp_path / "flows"
    root.mkdir()
    shutil.copy(FLOWS / "nps.yml", root / "nps.yml")
    (root / "welcome.yml").write_text(WELCOME)
    (root / "everything.yml").write_text(EVERYTHING)
    (root / "steps.yml").write_text(STEPS)
    (root / "long.yml").write_text(LONG)
    return root


@pytest.fixture
async def fake(aiohttp_server: Any) -> FakeSlack:
    fake = FakeSlack(group_members=["U_GROUP"])
    server: TestServer = await aiohttp_server(fake.app())
    fake.base_url = str(server.make_url("")).rstrip("/")
    return fake


def parley_settings(fake: FakeSlack, db: str, flows: Path, **extra: Any) -> Any:
    values: dict[str, Any] = {
        "db": db,
        "flows": flows,
        "slack_bot_token": "xoxb-test",
        "slack_signing_secret": SECRET,
        "slack_api_url": fake.base_url + "/api/",
        "researchers": "U_RES,@research",
    }
    values.update(extra)
    return load_settings(**values)


@pytest.fixture
async def parley(
    aiohttp_client: Any, fake: FakeSlack, flows: Path, tmp_path: Path
) -> AsyncIterator[TestClient]:
    app = create_app(
        parley_settings(fake, str(tmp_path / "parley.db"), flows, slack_team_join=True)
    )
    yield await aiohttp_client(app)


async def post_event(
    client: TestClient,
    body: str,
    *,
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
    timestamp: int | None = None,
    secret: str = SECRET,
) -> Any:
    all_headers = {"Content-Type": content_type, **sign(body, secret, timestamp), **(headers or {})}
    return await client.post("/slack/events", data=body.encode(), headers=all_headers)


async def post_action(client: TestClient, payload: dict[str, Any]) -> Any:
    response = await post_event(
        client, interactive_body(payload), content_type="application/x-www-form-urlencoded"
    )
    assert response.status == 200, await response.text()
    return response


async def dm(
    client: TestClient,
    user: str,
    text: str,
    *,
    msg_id: str,
    event_id: str | None = None,
    retry: int | None = None,
    ts: str | None = None,
    thread_ts: str | None = None,
) -> Any:
    headers = (
        {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"} if retry else None
    )
    event = dm_event(user, text, client_msg_id=msg_id, ts=ts, thread_ts=thread_ts)
    body = event_body(event, event_id=event_id or f"Ev{msg_id}")
    response = await post_event(client, body, headers=headers)
    assert response.status == 200, await response.text()
    return response


async def open_form(parley: TestClient, fake: FakeSlack, user: str, question: Any) -> Any:
    """Click a question's form button (text, email) and return the modal Parley opens."""
    actions = question.args["blocks"][-1]
    form = next(e for e in actions["elements"] if e["action_id"].startswith("parley:form:"))
    opened = len(fake.calls_to("views.open"))
    await post_action(
        parley,
        block_actions(
            user,
            form | {"block_id": actions["block_id"]},
            message=question.posted,
            channel=question.posted["channel"],
        ),
    )
    return (await fake.wait_calls("views.open", opened + 1))[opened].args["view"]


def submitted(user: str, view: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A view_submission of ``view`` with the given state values, as Slack sends it."""
    return {
        "type": "view_submission",
        "team": {"id": "T1"},
        "user": {"id": user, "team_id": "T1"},
        "api_app_id": "A1",
        "trigger_id": "1.2",
        "view": view | {"id": "V9", "state": {"values": values}},
    }


def text_input(value: str) -> dict[str, Any]:
    return {"parley:text": {"parley:text_input": {"type": "plain_text_input", "value": value}}}


async def stored_values(client: TestClient) -> list[Any]:
    """The values of every stored answer, in the order they were stored."""
    async with client.app[DATABASE].reads() as session:
        answers = await session.execute(select(Answer).order_by(Answer.id))
        return [answer.value for answer in answers.scalars()]


async def count(client: TestClient, model: Any, *where: Any) -> int:
    db = client.app[DATABASE]
    async with db.reads() as session:
        return int(
            (
                await session.execute(select(func.count()).select_from(model).where(*where))
            ).scalar_one()
        )


async def wait_count(
    client: TestClient, fake: FakeSlack, model: Any, expected: int, *where: Any
) -> None:
    deadline = time.monotonic() + 10
    while await count(client, model, *where) != expected:
        assert time.monotonic() < deadline, (
            f"{model.__name__}: wanted {expected}, have {await count(client, model, *where)}"
        )
        await fake.wait_for(lambda: True, 0.1)
        import asyncio

        await asyncio.sleep(0.02)


def posts(fake: FakeSlack) -> list[Any]:
    return fake.calls_to("chat.postMessage")


def block_texts(call: Any) -> str:
    return json.dumps(call.args.get("blocks") or [])


async def start_nps(client: TestClient, fake: FakeSlack, user: str = "U1") -> Any:
    """Start the NPS flow for a user (as a campaign would) through the running app."""
    runtime = client.app[SLACK]
    flow = runtime.catalog.get("nps")
    return await runtime.respondents.start_flow(
        runtime.client, flow=flow, team_id=slack_fake.TEAM, user_id=user
    )


HOME_OPT_OUT_TICKED = {  # the App Home's "Don't send me surveys" checkbox, as Slack sends it
    "type": "checkboxes",
    "action_id": "parley:home_optout",
    "block_id": "parley:home:optout",
    "selected_options": [{"value": "opt_out"}],
}


async def nps_follow_up(parley: TestClient, fake: FakeSlack, *, score: int) -> tuple[Any, Any]:
    """U1 is asked the NPS question and clicks ``score``: that question, and the follow-up
    (a text question) Parley posts next."""
    await start_nps(parley, fake)
    _, question = await fake.wait_calls("chat.postMessage", 2)
    await post_action(parley, click("U1", question.posted, index=score))
    follow_up = (await fake.wait_calls("chat.postMessage", 3))[2]
    return question, follow_up


# --- connection, signatures ---------------------------------------------------------------------


async def test_forged_and_stale_requests_are_refused_and_store_nothing(
    parley: TestClient, fake: FakeSlack
) -> None:
    body = event_body(dm_event("U1", "hi", client_msg_id="m-forged"))
    forged = await post_event(parley, body, secret="wrong")
    stale = await post_event(parley, body, timestamp=int(time.time()) - 600)
    unsigned = await parley.post(
        "/slack/events", data=body, headers={"Content-Type": "application/json"}
    )
    assert (forged.status, stale.status, unsigned.status) == (401, 401, 401)
    good = sign(body)
    for header, bad in [
        ("X-Slack-Signature", "v0=é"),
        ("X-Slack-Request-Timestamp", ""),
        ("X-Slack-Request-Timestamp", "1e3"),
        ("X-Slack-Request-Timestamp", "9" * 5000),
    ]:
        headers = {**good, header: bad, "Content-Type": "application/json"}
        response = await parley.post("/slack/events", data=body, headers=headers)
        assert response.status == 401, (header, bad)  # not a 500 and a traceback
    assert await count(parley, SlackInbox) == 0
    assert await count(parley, Respondent) == 0
    assert posts(fake) == []


async def test_url_verification(parley: TestClient) -> None:
    body = json.dumps({"type": "url_verification", "challenge": "abc123", "token": "t"})
    response = await post_event(parley, body)
    assert response.status == 200
    assert "abc123" in await response.text()


# --- a whole NPS conversation ---------------------------------------------------------------------


@pytest.mark.postgres
async def test_whole_nps_conversation_in_a_dm(
    aiohttp_client: Any, fake: FakeSlack, flows: Path, db_url: str
) -> None:
    client = await aiohttp_client(create_app(parley_settings(fake, db_url, flows)))
    await start_nps(client, fake)
    intro, question = await fake.wait_calls("chat.postMessage", 2)
    assert "Hi Ada!" in block_texts(intro)  # piped from users.info
    assert "Don't survey me again" in block_texts(intro)  # opt-out on every intro
    nps_blocks = question.args["blocks"]
    buttons = next(b for b in nps_blocks if b["type"] == "actions")["elements"]
    assert [b["text"]["text"] for b in buttons] == [str(n) for n in range(11)]
    assert "Not at all likely" in json.dumps(nps_blocks) and "Extremely likely" in json.dumps(
        nps_blocks
    )

    await post_action(client, click("U1", question.posted, index=4))  # score 4
    follow_up = (await fake.wait_calls("chat.postMessage", 3))[2]
    assert "parley:form:why_low" in block_texts(follow_up)  # the detractor follow-up (text)
    update = (await fake.wait_calls("chat.update", 1))[0]
    assert update.args["ts"] == question.posted["ts"]
    assert "Your answer: 4" in json.dumps(update.args["blocks"])
    assert not any(b["type"] == "actions" for b in update.args["blocks"])  # buttons dropped

    await dm(client, "U1", "The search is too slow", msg_id="m-why")
    outro = (await fake.wait_calls("chat.postMessage", 4))[3]
    assert "parley:" not in block_texts(outro)  # the outro asks nothing
    await fake.wait_calls("chat.update", 2)
    assert "The search is too slow" in json.dumps(fake.calls_to("chat.update")[1].args["blocks"])

    db = client.app[DATABASE]
    async with db.reads() as session:
        answers = {a.step_id: a.value for a in (await session.execute(select(Answer))).scalars()}
        conversation = (await session.execute(select(Conversation))).scalar_one()
        respondent = (await session.execute(select(Respondent))).scalar_one()
    assert answers == {"score": 4, "why_low": "The search is too slow"}
    assert conversation.status == "completed" and conversation.channel == "slack"
    assert respondent.key == "slack:T1:U1" and respondent.timezone == "Europe/Berlin"
    assert len(fake.calls_to("conversations.open")) == 1
    # finished: no question copies kept (only the mark that the closing words were said)
    assert await count(client, SlackMessage, SlackMessage.question != "") == 0
    assert await count(client, SlackMessage, SlackMessage.ts.is_(None)) == 0


async def test_double_click_records_one_answer_and_one_reply(
    parley: TestClient, fake: FakeSlack
) -> None:
    await start_nps(parley, fake)
    _, question = await fake.wait_calls("chat.postMessage", 2)
    payload = click("U1", question.posted, index=9)
    await post_action(parley, payload)
    await post_action(parley, payload)
    await fake.wait_calls("chat.postMessage", 3)
    await wait_count(parley, fake, Answer, 1)
    await fake.wait_calls("chat.update", 1)
    await post_action(parley, payload)  # and a late third click
    # a different value on the old message is stale: an ephemeral note, nothing changes
    await post_action(parley, click("U1", question.posted, index=2))
    note = (await fake.wait_calls("chat.postEphemeral", 1))[0]
    assert "already answered" in note.args["text"]
    assert len(posts(fake)) == 3
    assert len(fake.calls_to("chat.update")) == 1
    assert await count(parley, Answer) == 1


async def test_retried_event_is_handled_once(parley: TestClient, fake: FakeSlack) -> None:
    await nps_follow_up(parley, fake, score=8)
    await dm(parley, "U1", "Faster exports", msg_id="m-1", event_id="Ev-A")
    await dm(parley, "U1", "Faster exports", msg_id="m-1", event_id="Ev-A", retry=1)
    await dm(parley, "U1", "Faster exports", msg_id="m-1", event_id="Ev-A", retry=2)
    await fake.wait_calls("chat.postMessage", 4)
    await wait_count(parley, fake, Answer, 2)
    await wait_count(parley, fake, SlackInbox, 1, SlackInbox.status == "done")
    assert len(posts(fake)) == 4


async def test_typed_answer_that_does_not_fit_is_explained(
    parley: TestClient, fake: FakeSlack
) -> None:
    await start_nps(parley, fake)
    await fake.wait_calls("chat.postMessage", 2)
    await dm(parley, "U1", "eleven", msg_id="m-bad")
    reply = (await fake.wait_calls("chat.postMessage", 3))[2]
    assert "whole number from 0 to 10" in reply.args["text"]
    await dm(parley, "U1", "10", msg_id="m-good")
    await wait_count(parley, fake, Answer, 1)


async def test_words_sent_with_a_file_are_an_answer_and_a_file_alone_is_explained(
    parley: TestClient, fake: FakeSlack
) -> None:
    await nps_follow_up(parley, fake, score=4)
    alone = dm_event("U1", "", client_msg_id="m-file") | {"subtype": "file_share", "files": [{}]}
    await post_event(parley, event_body(alone, event_id="Ev-file"))
    note = (await fake.wait_calls("chat.postMessage", 4))[3]
    assert "only read text" in note.args["text"]
    edited = dm_event("U1", "x", client_msg_id="m-x") | {"subtype": "message_changed"}
    await post_event(parley, event_body(edited, event_id="Ev-edit"))  # not an answer
    shot = dm_event("U1", "See the screenshot: it hangs", client_msg_id="m-shot")
    await post_event(parley, event_body(shot | {"subtype": "file_share"}, event_id="Ev-shot"))
    await wait_count(parley, fake, Answer, 2)
    assert await stored_values(parley) == [4, "See the screenshot: it hangs"]
    # with nothing to answer, a file is a first contact like any DM
    first = dm_event("U9", "", client_msg_id="m-file9") | {"subtype": "file_share"}
    await post_event(parley, event_body(first, event_id="Ev-file9"))
    welcomed = await fake.wait_for(lambda: [c for c in posts(fake) if c.args["channel"] == "DU9"])
    assert "only read text" not in str(welcomed[0].args.get("text"))


async def test_typed_text_is_stored_as_the_person_wrote_it(
    parley: TestClient, fake: FakeSlack
) -> None:
    """Slack sends &, <, > escaped and links, addresses and mentions as markup: the answer
    is what the person typed, in results, exports and the answered question alike."""
    await nps_follow_up(parley, fake, score=4)
    sent = (
        "Q&amp;A is &lt;slow&gt; see <https://ex.com/a?b=1&amp;c=2|ex.com/a?b=1&amp;c=2> "
        "cc <@U999> <mailto:a@b.co|a@b.co>"
    )
    await dm(parley, "U1", sent, msg_id="m-markup")
    await wait_count(parley, fake, Answer, 2)
    async with parley.app[DATABASE].reads() as session:
        texts = [a.value for a in (await session.execute(select(Answer))).scalars()]
    typed = "Q&A is <slow> see ex.com/a?b=1&c=2 cc @U999 a@b.co"
    assert texts == [4, typed]
    update = (await fake.wait_calls("chat.update", 2))[1]
    assert escape(typed) in json.dumps(update.args["blocks"])  # escaped once, as sent


async def test_a_dm_not_written_to_the_open_question_is_not_its_answer(
    parley: TestClient, fake: FakeSlack
) -> None:
    """A second message about the last question, sent before the next one showed, or a
    reply in an earlier message's thread, would be filed as the answer to the wrong question."""
    question, follow_up = await nps_follow_up(parley, fake, score=4)
    shown = float(follow_up.posted["ts"])
    await dm(parley, "U1", "and it crashes", msg_id="m-early", ts=f"{shown - 0.5:.6f}")
    early = (await fake.wait_calls("chat.postMessage", 4))[3]
    assert "sent before I asked it" in early.args["text"]
    old_thread = question.posted["ts"]
    await dm(parley, "U1", "I meant 6", msg_id="m-thread", thread_ts=old_thread)
    threaded = (await fake.wait_calls("chat.postMessage", 5))[4]
    assert "thread of an earlier question" in threaded.args["text"]
    assert await count(parley, Answer) == 1
    # in the question's own thread, after it was asked: that is its answer
    await dm(parley, "U1", "Search is slow", msg_id="m-ok", thread_ts=follow_up.posted["ts"])
    await wait_count(parley, fake, Answer, 2)


async def test_a_form_sent_after_the_question_was_answered_says_so(
    parley: TestClient, fake: FakeSlack
) -> None:
    """The form was opened, then the question was answered by a DM: the form's text is not
    recorded, and the person hears why instead of a form that closes as if it took it."""
    _, follow_up = await nps_follow_up(parley, fake, score=4)
    view = await open_form(parley, fake, "U1", follow_up)
    await dm(parley, "U1", "Search is slow", msg_id="m-first")
    await wait_count(parley, fake, Answer, 2)
    response = await post_action(parley, submitted("U1", view, text_input("Something else")))
    assert response.status == 200
    note = await fake.wait_for(
        lambda: [c for c in posts(fake) if "already answered" in str(c.args.get("text"))]
    )
    assert note[0].args["channel"] == follow_up.posted["channel"]
    assert await stored_values(parley) == [4, "Search is slow"]


# --- respondents start, stop -----------------------------------------------------------------------


async def test_first_dm_starts_welcome_and_stop_opts_out(
    parley: TestClient, fake: FakeSlack
) -> None:
    await dm(parley, "U7", "hi", msg_id="m-hi")
    intro, question = await fake.wait_calls("chat.postMessage", 2)
    assert "Hi Ada!" in block_texts(intro)
    assert question.args["channel"] == "DU7"
    assert fake.calls_to("conversations.open") == []  # the DM channel came with the event
    await post_action(parley, click("U7", question.posted, text="Product"))
    outro = (await fake.wait_calls("chat.postMessage", 3))[2]
    assert "Thanks, Ada." in block_texts(outro)
    await dm(parley, "U7", "hi", msg_id="m-hi-again")  # not first contact any more
    nothing = (await fake.wait_calls("chat.postMessage", 4))[3]
    assert "Nothing to answer" in nothing.args["text"]

    await dm(parley, "U7", "stop", msg_id="m-stop")
    confirm = (await fake.wait_calls("chat.postMessage", 5))[4]
    assert "won't get any more surveys" in confirm.args["text"]
    await wait_count(parley, fake, Event, 1, Event.kind == "respondent.opted_out")
    assert await start_nps(parley, fake, user="U7") is None  # opted out for good
    await dm(parley, "U7", "hi", msg_id="m-after")
    await wait_count(parley, fake, SlackInbox, 4, SlackInbox.status == "done")
    assert len(posts(fake)) == 5


async def test_stop_takes_the_buttons_off_the_waiting_question_only(
    parley: TestClient, fake: FakeSlack
) -> None:
    """An answered question keeps showing its answer; the one still waiting says why it
    takes none."""
    question, follow_up = await nps_follow_up(parley, fake, score=9)
    await fake.wait_calls("chat.update", 1)
    await dm(parley, "U1", "stop", msg_id="m-stop-now")
    await wait_count(parley, fake, Respondent, 1, Respondent.opted_out.is_(True))
    await parley.app[SLACK].drain()
    last = {c.args["ts"]: c.args for c in fake.calls_to("chat.update")}
    assert "Your answer: 9" in json.dumps(last[question.result["ts"]]["blocks"])
    assert "opted out" in last[follow_up.result["ts"]]["text"]


async def test_opt_out_button_on_the_intro(parley: TestClient, fake: FakeSlack) -> None:
    await start_nps(parley, fake, user="U8")
    intro, question = await fake.wait_calls("chat.postMessage", 2)
    opt = next(b for b in intro.args["blocks"] if b.get("block_id", "").endswith(":optout:o"))[
        "elements"
    ][0]
    payload = block_actions("U8", opt, message=intro.posted, channel=intro.posted["channel"])
    await post_action(parley, payload)
    await post_action(parley, payload)  # double click: confirmed in one message
    await fake.wait_calls("chat.postMessage", 3)
    await parley.app[SLACK].drain()
    texts = [c.args["text"] for c in posts(fake)[2:]]
    assert len(texts) == 1 and texts[0].startswith("Done")
    (retired,) = fake.calls_to("chat.update")  # the open question takes no more answers
    assert retired.args["ts"] == question.result["ts"] and "opted out" in retired.args["text"]
    assert not any(b["type"] == "actions" for b in retired.args["blocks"])
    async with parley.app[DATABASE].reads() as session:
        respondent = (await session.execute(select(Respondent))).scalar_one()
        conversation = (await session.execute(select(Conversation))).scalar_one()
    assert respondent.opted_out and conversation.open_key is None


async def test_team_join_starts_welcome(parley: TestClient, fake: FakeSlack) -> None:
    body = event_body(
        {"type": "team_join", "user": {"id": "U_NEW", "team_id": "T1", "is_bot": False}},
        event_id="Ev-join",
    )
    assert (await post_event(parley, body)).status == 200
    assert (await post_event(parley, body, headers={"X-Slack-Retry-Num": "1"})).status == 200
    _, question = await fake.wait_calls("chat.postMessage", 2)
    assert question.args["channel"] == "DU_NEW"
    assert len(fake.calls_to("conversations.open")) == 1
    await wait_count(parley, fake, Conversation, 1)
    await wait_count(parley, fake, SlackInbox, 1, SlackInbox.status == "done")
    assert len(posts(fake)) == 2


async def test_answering_one_copy_of_a_question_asked_again_closes_both(
    parley: TestClient, fake: FakeSlack
) -> None:
    await start_nps(parley, fake)
    _, original = await fake.wait_calls("chat.postMessage", 2)
    await dm(parley, "U1", "hi", msg_id="m-hi-again")  # the question is posted again
    copy = (await fake.wait_calls("chat.postMessage", 3))[2]
    assert copy.result["ts"] != original.result["ts"]
    await post_action(parley, click("U1", original.posted, index=9))
    await fake.wait_calls("chat.update", 2)
    await parley.app[SLACK].drain()
    updated = {c.args["ts"] for c in fake.calls_to("chat.update")}
    assert updated == {original.result["ts"], copy.result["ts"]}


async def test_a_greeting_shows_a_waiting_text_question_again_and_is_no_answer(
    parley: TestClient, fake: FakeSlack
) -> None:
    _, follow_up = await nps_follow_up(parley, fake, score=4)
    await dm(parley, "U1", "Hi!", msg_id="m-back")  # back after a while
    again = (await fake.wait_calls("chat.postMessage", 4))[3]
    assert again.args["text"] == follow_up.args["text"]
    await dm(parley, "U1", "Too slow", msg_id="m-answer")
    await wait_count(parley, fake, Answer, 2)
    assert await stored_values(parley) == [4, "Too slow"]


async def test_a_question_asked_again_takes_the_buttons_off_its_older_copies(
    parley: TestClient, fake: FakeSlack
) -> None:
    """Only the newest copy of a question can be answered: no old message keeps live buttons
    (Parley remembers one copy a question; the older one is retired as the new one goes out)."""
    await start_nps(parley, fake)
    _, first = await fake.wait_calls("chat.postMessage", 2)
    await dm(parley, "U1", "hi", msg_id="m-again-1")
    second = (await fake.wait_calls("chat.postMessage", 3))[2]
    await dm(parley, "U1", "hello", msg_id="m-again-2")
    third = (await fake.wait_calls("chat.postMessage", 4))[3]
    await post_action(parley, click("U1", third.posted, index=7))
    await wait_count(parley, fake, Answer, 1)
    await parley.app[SLACK].drain()

    last: dict[str, Any] = {}
    for call in fake.calls_to("chat.update"):
        last[call.args["ts"]] = call.args
    copies = [first.result["ts"], second.result["ts"], third.result["ts"]]
    assert set(last) == set(copies)  # every copy was updated ...
    for ts in copies:  # ... and none keeps buttons
        assert not any(b["type"] == "actions" for b in last[ts]["blocks"])
    assert "Asked again below" in json.dumps(last[first.result["ts"]]["blocks"])
    assert "Your answer: 7" in json.dumps(last[third.result["ts"]]["blocks"])


async def test_a_copy_asked_again_while_the_question_was_answered_is_the_one_closed(
    parley: TestClient, fake: FakeSlack
) -> None:
    """The answer came in while the new copy was on its way (Slack asked it to wait): the
    answered copy keeps its answer, and the new one takes no answer either."""
    await start_nps(parley, fake)
    _, first = await fake.wait_calls("chat.postMessage", 2)
    fake.fail("chat.postMessage", status=429, error="ratelimited", retry_after=1)
    await dm(parley, "U1", "hi", msg_id="m-again-slow")
    await fake.wait_calls("chat.postMessage", 3)  # the new copy, told to wait
    await post_action(parley, click("U1", first.posted, index=8))
    await wait_count(parley, fake, Answer, 1)
    await fake.wait_for(lambda: len([c for c in posts(fake) if c.result.get("ok")]) == 4)
    await parley.app[SLACK].drain()

    last = {c.args["ts"]: c.args for c in fake.calls_to("chat.update")}
    copies = [
        c for c in posts(fake) if c.result.get("ok") and c.args.get("text") == first.args["text"]
    ]
    assert len(copies) == 2
    assert "Your answer: 8" in json.dumps(last[first.result["ts"]]["blocks"])
    again = last[copies[1].result["ts"]]
    assert "Answered already" in again["text"]
    assert not any(b["type"] == "actions" for b in again["blocks"])


async def test_a_welcome_slack_could_not_deliver_is_posted_by_the_sweep(
    parley: TestClient, fake: FakeSlack
) -> None:
    """The conversation and the claim on its first question are one transaction: Slack
    failing right after the start leaves the question for the sweep, not a silent survey."""
    fake.fail("conversations.open", status=503, error="service_unavailable", times=3)
    body = event_body(
        {"type": "team_join", "user": {"id": "U_NEW", "team_id": "T1", "is_bot": False}},
        event_id="Ev-join-down",
    )
    assert (await post_event(parley, body)).status == 200
    await wait_count(parley, fake, Conversation, 1)
    runtime = parley.app[SLACK]
    await runtime.drain()
    assert posts(fake) == []
    assert await recover_once(runtime, after=timedelta(seconds=-1)) == 1
    intro, question = posts(fake)  # its first words too, with the opt-out button
    assert "Don't survey me again" in block_texts(intro) and "Hi Ada" in block_texts(intro)
    assert question.args["channel"] == "DU_NEW"
    assert "What is your role" in json.dumps(question.args["blocks"])
    assert await recover_once(runtime, after=timedelta(seconds=-1)) == 0


async def test_a_welcome_slack_can_never_deliver_leaves_no_claim_behind(
    parley: TestClient, fake: FakeSlack
) -> None:
    fake.fail("conversations.open", error="user_not_found")
    body = event_body(
        {"type": "team_join", "user": {"id": "U_GONE", "team_id": "T1", "is_bot": False}},
        event_id="Ev-join-gone",
    )
    assert (await post_event(parley, body)).status == 200
    await wait_count(parley, fake, Event, 1, Event.kind == "slack.undeliverable")
    runtime = parley.app[SLACK]
    await runtime.drain()
    assert await count(parley, SlackMessage) == 0
    for _ in range(2):
        await recover_once(runtime, after=timedelta(seconds=-1))
    assert len(fake.calls_to("conversations.open")) == 1 and posts(fake) == []
    assert await count(parley, Event, Event.kind == "slack.undeliverable") == 1


async def test_question_copies_of_a_conversation_closed_by_stop_go_at_the_next_sweep(
    parley: TestClient, fake: FakeSlack
) -> None:
    """A question may pipe an earlier answer (an anonymous flow's too): once the
    conversation is over, its copies are not kept beside the person."""
    await nps_follow_up(parley, fake, score=3)
    await dm(parley, "U1", "stop", msg_id="m-stop")
    await wait_count(parley, fake, Respondent, 1, Respondent.opted_out.is_(True))
    runtime = parley.app[SLACK]
    await runtime.drain()
    assert await count(parley, SlackMessage) > 0
    await recover_once(runtime, after=timedelta(seconds=-1))
    assert await count(parley, SlackMessage) == 0


async def start_steps(parley: TestClient) -> Any:
    runtime = parley.app[SLACK]
    flow = runtime.catalog.get("steps")
    return await runtime.respondents.start_flow(
        runtime.client, flow=flow, team_id=slack_fake.TEAM, user_id="U1"
    )


def said(fake: FakeSlack, text: str) -> int:
    """How many posts Slack accepted that say ``text``."""
    return len([c for c in posts(fake) if c.result.get("ok") and text in block_texts(c)])


async def test_when_only_the_question_failed_the_sweep_does_not_say_the_intro_twice(
    parley: TestClient, fake: FakeSlack
) -> None:
    # the intro goes through, then Slack fails the question (a first try and two retries)
    fake.fail("chat.postMessage", status=503, error="service_unavailable", times=3, after=1)
    with pytest.raises(SlackApiError):
        await start_steps(parley)
    runtime = parley.app[SLACK]
    await runtime.drain()
    assert said(fake, "Hello from the steps survey") == 1 and said(fake, "First?") == 0
    assert await recover_once(runtime, after=timedelta(seconds=-1)) == 1
    assert said(fake, "First?") == 1
    assert said(fake, "Hello from the steps survey") == 1  # not said twice
    assert said(fake, "Don't survey me again") == 1  # nor its button


@pytest.mark.parametrize("failed", ["the intro", "only the question"])
async def test_hi_before_the_sweep_brings_the_intro_slack_never_showed(
    parley: TestClient, fake: FakeSlack, failed: str
) -> None:
    """Slack failed the first words; the person says "hi" before the sweep comes by: the
    question comes with its intro and opt-out button, unless Slack shows those already, and
    the sweep has nothing left to do."""
    after = 0 if failed == "the intro" else 1  # the intro went through, then the question failed
    fake.fail("chat.postMessage", status=503, error="service_unavailable", times=3, after=after)
    with pytest.raises(SlackApiError):
        await start_steps(parley)
    runtime = parley.app[SLACK]
    await runtime.drain()
    await dm(parley, "U1", "hi", msg_id="m-back-soon")
    await fake.wait_for(lambda: said(fake, "First?") == 1)
    await runtime.drain()
    assert said(fake, "Hello from the steps survey") == 1  # said once, either way
    assert said(fake, "Don't survey me again") == 1
    assert await recover_once(runtime, after=timedelta(seconds=-1)) == 0
    assert said(fake, "First?") == 1 and said(fake, "Hello from the steps survey") == 1


async def test_two_greetings_after_a_failed_first_delivery_post_it_once(
    parley: TestClient, fake: FakeSlack
) -> None:
    """Both find the question never shown; retaking its claim decides which one posts the
    intro and question. (The other one, finding the question shown by then, shows it again
    as any greeting does: one live copy.)"""
    fake.fail("chat.postMessage", status=503, error="service_unavailable", times=3)
    with pytest.raises(SlackApiError):
        await start_steps(parley)
    runtime = parley.app[SLACK]
    await runtime.drain()
    fake.fail("conversations.history", status=429, error="ratelimited", retry_after=1)
    await dm(parley, "U1", "hi", msg_id="m-hi-1")
    await fake.wait_calls("conversations.history", 1)  # the first one waits on Slack here
    fake.fail("chat.postMessage", status=429, error="ratelimited", retry_after=2)  # outlasts it
    await dm(parley, "U1", "hello", msg_id="m-hi-2")
    await runtime.drain()
    assert said(fake, "Hello from the steps survey") == 1
    assert said(fake, "Don't survey me again") == 1
    copies = [
        c.result["ts"] for c in posts(fake) if c.result.get("ok") and "First?" in block_texts(c)
    ]
    retired = {c.args["ts"] for c in fake.calls_to("chat.update")}
    assert copies and set(copies[:-1]) <= retired and copies[-1] not in retired  # one live


async def test_hi_while_the_first_words_are_still_on_their_way_adds_nothing(
    parley: TestClient, fake: FakeSlack
) -> None:
    """Slack asked the first post to wait (429); a "hi" meanwhile must not post a second
    intro and question beside the ones being delivered."""
    import asyncio

    fake.fail("chat.postMessage", status=429, error="ratelimited", retry_after=1)
    starting = asyncio.ensure_future(start_steps(parley))
    await fake.wait_calls("chat.postMessage", 1)  # the intro, told to wait
    await dm(parley, "U1", "hi", msg_id="m-impatient")
    runtime = parley.app[SLACK]
    await runtime.drain()
    await starting
    await runtime.drain()
    assert said(fake, "Hello from the steps survey") == 1 and said(fake, "First?") == 1
    assert said(fake, "Don't survey me again") == 1


async def test_a_long_lead_in_cut_short_by_slack_is_finished_not_repeated(
    parley: TestClient, fake: FakeSlack
) -> None:
    """The words before the first question go out as two messages; Slack takes the first
    and fails the second: the sweep says only the second (and asks), one opt-out button."""
    runtime = parley.app[SLACK]
    fake.fail("chat.postMessage", status=503, error="service_unavailable", times=3, after=1)
    with pytest.raises(SlackApiError):
        await runtime.respondents.start_flow(
            runtime.client, flow=runtime.catalog.get("long"), team_id=slack_fake.TEAM, user_id="U1"
        )
    await runtime.drain()
    assert await recover_once(runtime, after=timedelta(seconds=-1)) == 1
    accepted = [c for c in posts(fake) if c.result.get("ok")]
    assert len(accepted) == 3  # part one, then part two and the question
    assert said(fake, "Don't survey me again") == 1
    for word in ("Alpha", "Bravo", "Charlie", "Delta"):
        assert sum(block_texts(c).count(word) for c in accepted) == 2990 // (len(word) + 1)
    assert said(fake, "First?") == 1


async def test_words_between_questions_that_failed_come_with_the_late_question(
    parley: TestClient, fake: FakeSlack
) -> None:
    await start_steps(parley)
    first = (await fake.wait_calls("chat.postMessage", 2))[1]
    fake.fail("chat.postMessage", status=503, error="service_unavailable", times=3)
    await post_action(parley, click("U1", first.posted, index=0))  # "Yes"
    await wait_count(parley, fake, Answer, 1)
    runtime = parley.app[SLACK]
    await runtime.drain()
    assert said(fake, "Thanks - one more") == 0 and said(fake, "Second?") == 0
    assert await recover_once(runtime, after=timedelta(seconds=-1)) == 1
    assert said(fake, "Thanks - one more") == 1 and said(fake, "Second?") == 1
    assert said(fake, "Hello from the steps survey") == 1  # the intro was not the lead-in
    assert "Don't survey me again" not in json.dumps([c.args for c in posts(fake)[2:]])


async def test_claim_deadlines_cover_the_work_that_claims_and_end_with_it(
    parley: TestClient, fake: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rate-limit wait must never outlive the claims its work holds — and a deadline must not
    leak into later work (the sweep runs pass after pass in one task)."""
    from bot.channels.slack.delivery import STALE_CLAIM, Delivery, seconds_left

    seen: list[float | None] = []
    original = Delivery.post

    async def post(self: Delivery, client: Any, **kwargs: Any) -> str:
        seen.append(seconds_left())
        return await original(self, client, **kwargs)

    monkeypatch.setattr(Delivery, "post", post)
    await dm(parley, "U5", "hi", msg_id="m-deadline")  # a listener: the welcome flow
    await fake.wait_calls("chat.postMessage", 2)
    runtime = parley.app[SLACK]
    await runtime.drain()
    assert seen and all(s is not None and 0 < s < STALE_CLAIM.total_seconds() for s in seen)

    reply = await start_nps(parley, fake)
    assert seconds_left() is None  # called outside any listener: no deadline
    seen.clear()
    await crash_after_answering(runtime, reply.conversation_id)
    assert await recover_once(runtime, after=timedelta(seconds=-1)) == 1
    assert seen and all(s is not None for s in seen)  # the sweep item held one
    assert seconds_left() is None  # and it ended with the item


# --- App Home ---------------------------------------------------------------------------------------


async def home_button(parley: TestClient, fake: FakeSlack, user: str, action_id: str) -> Any:
    """Open the App Home as ``user`` and return the button with ``action_id``."""
    seen = len(fake.calls_to("views.publish"))
    body = event_body(
        {"type": "app_home_opened", "user": user, "tab": "home"}, event_id=f"Ev-{user}"
    )
    assert (await post_event(parley, body)).status == 200
    view = (await fake.wait_calls("views.publish", seen + 1))[seen].args["view"]
    return next(
        element
        for block in view["blocks"]
        for element in block.get("elements", [block.get("accessory")])
        if element and element.get("action_id") == action_id
    )


async def test_long_replies_are_read_whole_and_answered_with_their_real_length(
    parley: TestClient, fake: FakeSlack
) -> None:
    await start_nps(parley, fake)
    _, question = await fake.wait_calls("chat.postMessage", 2)
    await post_action(parley, click("U1", question.posted, index=3))  # -> why_low, 2000 max
    await fake.wait_calls("chat.postMessage", 3)
    await dm(parley, "U1", "é" * 12_000, msg_id="m-12k")
    refused = (await fake.wait_calls("chat.postMessage", 4))[3]
    assert "12000" in refused.args["text"] and "2000" in refused.args["text"]
    await dm(parley, "U1", "ü" * 39_000, msg_id="m-39k")  # near Slack's 40,000: ~470 KB of JSON
    await fake.wait_calls("chat.postMessage", 5)
    assert await count(parley, Answer) == 1


async def test_home_start_runs_welcome_once_even_clicked_twice_or_later_again(
    parley: TestClient, fake: FakeSlack
) -> None:
    start = await home_button(parley, fake, "U4", "parley:start")
    await post_action(parley, block_actions("U4", start, home=True))
    await post_action(parley, block_actions("U4", start, home=True))  # a double click
    _, question = await fake.wait_calls("chat.postMessage", 2)
    await post_action(parley, click("U4", question.posted, text="Product"))
    await fake.wait_calls("chat.postMessage", 3)  # the outro: welcome done
    await post_action(parley, block_actions("U4", start, home=True))  # a Home tab left open
    await parley.app[SLACK].drain()
    assert len(posts(fake)) == 3
    assert await count(parley, Conversation) == 1


async def test_the_dashboard_link_click_is_acknowledged(
    aiohttp_client: Any, fake: FakeSlack, flows: Path, tmp_path: Path
) -> None:
    settings = parley_settings(
        fake, str(tmp_path / "p.db"), flows, public_url="https://parley.example.com"
    )
    parley = await aiohttp_client(create_app(settings))
    link = await home_button(parley, fake, "U_RES", "parley:dashboard")
    assert link["url"] == "https://parley.example.com/dashboard"
    await post_action(parley, block_actions("U_RES", link, home=True))  # Slack sends it too


async def test_app_home_for_respondents_and_researchers(
    parley: TestClient, fake: FakeSlack
) -> None:
    await start_nps(parley, fake, user="U1")
    await fake.wait_calls("chat.postMessage", 2)
    body = event_body(
        {"type": "app_home_opened", "user": "U1", "channel": "DU1", "tab": "home"},
        event_id="Ev-home",
    )
    assert (await post_event(parley, body)).status == 200
    publish = (await fake.wait_calls("views.publish", 1))[0]
    view = json.dumps(publish.args["view"])
    assert publish.args["user_id"] == "U1"
    assert "Resume" in view and "Net Promoter Score" in view and "Don't send me surveys" in view
    assert "Research" not in view

    # the Resume button posts the open question again
    resume = next(
        b
        for b in publish.args["view"]["blocks"]
        if b.get("accessory", {}).get("action_id") == "parley:resume"
    )["accessory"]
    await post_action(parley, block_actions("U1", resume, home=True))
    again = (await fake.wait_calls("chat.postMessage", 3))[2]
    assert "parley:answer:score" in block_texts(again)

    body = event_body(
        {"type": "app_home_opened", "user": "U_GROUP", "channel": "DU_GROUP", "tab": "home"},
        event_id="Ev-home-2",
    )
    await post_event(parley, body)
    researcher = (await fake.wait_calls("views.publish", 2))[1]
    view = json.dumps(researcher.args["view"])
    assert "Research" in view and "`everything`" in view and "1 response " in view

    # the toggle opts out
    await post_action(parley, block_actions("U1", HOME_OPT_OUT_TICKED, home=True))
    await fake.wait_calls("views.publish", 3)
    await wait_count(parley, fake, Respondent, 1, Respondent.opted_out.is_(True))

    # Resume on a Home tab left open after the survey closed: the tab is refreshed, and
    # nothing is posted (no "thank you" for a survey that ended long ago)
    posted = len(posts(fake))
    await post_action(parley, block_actions("U1", resume, home=True))
    await fake.wait_calls("views.publish", 4)
    await parley.app[SLACK].drain()
    assert len(posts(fake)) == posted


async def test_the_home_toggle_opts_out_even_when_slack_cannot_open_the_dm(
    parley: TestClient, fake: FakeSlack
) -> None:
    """Someone who never had a DM from the bot (or whose DM Slack will not open) ticks
    "Don't send me surveys": the opt-out is stored first; only the confirmation is lost."""
    fake.fail("conversations.open", error="messages_tab_disabled")
    await post_action(parley, block_actions("U7", HOME_OPT_OUT_TICKED, home=True))
    await fake.wait_calls("views.publish", 1)  # the Home is refreshed all the same
    await wait_count(parley, fake, Respondent, 1, Respondent.opted_out.is_(True))
    await dm(parley, "U7", "hello there", msg_id="m-after")  # no welcome survey now
    await parley.app[SLACK].drain()
    assert not [c for c in posts(fake) if c.args["channel"] == "DU7"]


async def test_app_home_start_button_runs_welcome(parley: TestClient, fake: FakeSlack) -> None:
    await post_event(
        parley,
        event_body({"type": "app_home_opened", "user": "U9", "tab": "home"}, event_id="Ev-h9"),
    )
    view = (await fake.wait_calls("views.publish", 1))[0].args["view"]
    start = next(
        e
        for b in view["blocks"]
        if b["type"] == "actions"
        for e in b["elements"]
        if e.get("action_id") == "parley:start"
    )
    await post_action(parley, block_actions("U9", start, home=True))
    _, question = await fake.wait_calls("chat.postMessage", 2)
    assert question.args["channel"] == "DU9" and "What is your role?" in block_texts(question)


# --- every step type -----------------------------------------------------------------------------------


async def test_every_step_type_through_slack(parley: TestClient, fake: FakeSlack) -> None:
    runtime = parley.app[SLACK]
    await runtime.respondents.start_flow(
        runtime.client, flow=runtime.catalog.get("everything"), team_id="T1", user_id="U2"
    )
    n = 1

    async def latest() -> Any:
        return (await fake.wait_calls("chat.postMessage", n))[n - 1]

    async def next_question() -> Any:
        nonlocal n
        n += 1
        return await latest()

    q = await latest()  # nps (no intro in this flow)
    await post_action(parley, click("U2", q.posted, index=10))
    q = await next_question()  # csat: labelled end buttons
    labels = [e["text"]["text"] for e in q.args["blocks"][1]["elements"]]
    assert labels[0] == "1 · Very dissatisfied" and labels[-1] == "5 · Very satisfied"
    await post_action(parley, click("U2", q.posted, index=4))
    q = await next_question()  # ces
    await post_action(parley, click("U2", q.posted, index=6))
    q = await next_question()  # rating 1..20: a select menu
    select_el = q.args["blocks"][1]["elements"][0]
    assert select_el["type"] == "static_select" and len(select_el["options"]) == 20
    action = select_el | {
        "block_id": q.args["blocks"][1]["block_id"],
        "selected_option": select_el["options"][14],
    }
    await post_action(
        parley, block_actions("U2", action, message=q.posted, channel=q.posted["channel"])
    )
    q = await next_question()  # choice with 2 options: buttons
    await post_action(parley, click("U2", q.posted, text="B"))
    q = await next_question()  # 6 options: a select menu
    select_el = q.args["blocks"][1]["elements"][0]
    assert select_el["type"] == "static_select"
    action = select_el | {
        "block_id": q.args["blocks"][1]["block_id"],
        "selected_option": select_el["options"][5],
    }
    await post_action(
        parley, block_actions("U2", action, message=q.posted, channel=q.posted["channel"])
    )
    q = await next_question()  # multi_choice: checkboxes + submit
    picker_block = q.args["blocks"][1]
    checkboxes = picker_block["elements"][0]
    assert checkboxes["type"] == "checkboxes"
    state = {
        picker_block["block_id"]: {
            checkboxes["action_id"]: {
                "type": "checkboxes",
                "selected_options": [checkboxes["options"][0], checkboxes["options"][2]],
            }
        }
    }
    tick = checkboxes | {
        "block_id": picker_block["block_id"],
        "selected_options": [checkboxes["options"][0]],
    }
    await post_action(
        parley, block_actions("U2", tick, message=q.posted, channel=q.posted["channel"])
    )  # acked only
    submit_block = q.args["blocks"][-1]
    submit = submit_block["elements"][0] | {"block_id": submit_block["block_id"]}
    await post_action(
        parley,
        block_actions("U2", submit, message=q.posted, channel=q.posted["channel"], state=state),
    )
    q = await next_question()  # yes_no
    await post_action(parley, click("U2", q.posted, text="Yes"))
    q = await next_question()  # text: reply in DM, or the form; optional so Skip too
    assert "reply here" in block_texts(q) and "Skip" in block_texts(q)
    view = await open_form(parley, fake, "U2", q)
    assert view["blocks"][0]["element"]["type"] == "plain_text_input"
    response = await post_action(
        parley, submitted("U2", view, text_input("Typed in a <b>form</b>"))
    )
    assert await response.text() == ""
    q = await next_question()  # email with its consent line
    assert "I agree to be contacted" in block_texts(q)
    view = await open_form(parley, fake, "U2", q)
    values = {
        "parley:email": {
            "parley:email_input": {"type": "email_text_input", "value": "ada@example.com"}
        },
        "parley:consent": {"parley:consent_input": {"type": "checkboxes", "selected_options": []}},
    }
    refused = await post_action(parley, submitted("U2", view, values))
    assert json.loads(await refused.text())["response_action"] == "errors"  # consent not ticked
    values["parley:consent"]["parley:consent_input"]["selected_options"] = [{"value": "yes"}]
    await post_action(parley, submitted("U2", view, values))
    done = await next_question()
    assert "Done." in block_texts(done)
    async with parley.app[DATABASE].reads() as session:
        answers = {a.step_id: a.value for a in (await session.execute(select(Answer))).scalars()}
    assert answers == {
        "nps": 10,
        "csat": 5,
        "ces": 7,
        "rate": 15,
        "few": "b",
        "many": "c6",
        "multi": ["x", "z"],
        "yn": True,
        "note": "Typed in a <b>form</b>",
        "mail": "ada@example.com",
    }
    updates = fake.calls_to("chat.update")
    assert "&lt;b&gt;form&lt;/b&gt;" in json.dumps(updates[-2].args["blocks"])  # escaped when shown


# --- /survey ----------------------------------------------------------------------------------------


async def command(client: TestClient, fake: FakeSlack, user: str, text: str) -> dict[str, Any]:
    before = len(fake.calls_to("response_url"))
    body = slash_command(user, text, response_url=fake.base_url + "/response/1")
    response = await post_event(client, body, content_type="application/x-www-form-urlencoded")
    assert response.status == 200  # acked at once
    return (await fake.wait_calls("response_url", before + 1))[before].args


async def test_survey_command_router(parley: TestClient, fake: FakeSlack) -> None:
    refused = await command(parley, fake, "U_STRANGER", "results nps")
    assert "for researchers" in refused["text"] and refused["response_type"] == "ephemeral"
    helped = await command(parley, fake, "U_RES", "help")
    assert "/survey results FLOW" in helped["text"] and "/survey flows" in helped["text"]
    unknown = await command(parley, fake, "U_RES", "frobnicate now")
    assert "Unknown subcommand `frobnicate`" in unknown["text"]
    flows = await command(parley, fake, "U_GROUP", "flows")  # via the @research usergroup
    assert "`everything` — Every step type · 10 questions" in flows["text"]
    assert "`nps` — Net Promoter Score · 4 questions" in flows["text"]

    await start_nps(parley, fake)
    _, question = await fake.wait_calls("chat.postMessage", 2)
    await post_action(parley, click("U1", question.posted, index=10))
    await wait_count(parley, fake, Answer, 1)
    results = await command(parley, fake, "U_RES", "results nps")
    assert "1 response ·" in results["text"] and "NPS +100" in results["text"]
    assert "Net Promoter Score (nps)" in json.dumps(results["blocks"])
    shouted = await command(parley, fake, "U_RES", "RESULTS NPS")  # flow ids are lower case
    assert "NPS +100" in shouted["text"]
    missing = await command(parley, fake, "U_RES", "results nope")
    assert "no flow called 'nope'" in missing["text"]
    assert len(fake.calls_to("usergroups.list")) == 1  # membership cached


async def test_results_show_answers_as_typed_never_as_formatting(
    parley: TestClient, fake: FakeSlack
) -> None:
    """A typed answer closing a ``` box early would talk to researchers as Parley, with
    bold text and links: the report is literal text, whatever the answers hold."""
    await nps_follow_up(parley, fake, score=0)
    sly = "``` *ACTION NEEDED* sign in again: <https://evil.example|Parley> <!channel> ```"
    as_slack_sends_it = sly.replace("<", "&lt;").replace(">", "&gt;")  # typed, not markup
    await dm(parley, "U1", as_slack_sends_it, msg_id="m-sly")
    await wait_count(parley, fake, Answer, 2)
    shown = (await fake.wait_calls("chat.update", 2))[1].args["text"]  # notification text too
    assert "<!channel>" not in shown and "&lt;!channel&gt;" in shown

    results = await command(parley, fake, "U_RES", "results nps")
    report = [b for b in results["blocks"] if b["type"] == "rich_text"]
    literal = [
        text["text"]
        for block in report
        for part in block["elements"]
        if part["type"] == "rich_text_preformatted"
        for text in part["elements"]
    ]
    assert any(sly in text for text in literal)  # shown as typed, in a box
    mrkdwn = [json.dumps(b) for b in results["blocks"] if b["type"] != "rich_text"]
    assert not any("evil.example" in text or "ACTION" in text for text in mrkdwn)


async def test_router_is_extensible() -> None:
    from bot.channels.slack.commands import CommandContext, Router, Subcommand

    router = Router()
    seen: list[list[str]] = []

    async def handler(ctx: CommandContext) -> None:
        seen.append(ctx.args)

    router.add(Subcommand("segments", "segments FLOW", "segment sizes", handler))
    assert "/survey segments FLOW" in router.help_text()
    ctx = CommandContext(None, None, None, "T1", "U", "C", ["segments", "nps"])  # type: ignore[arg-type]
    await router.dispatch(ctx)
    assert seen == [["segments", "nps"]]


# --- reliability ---------------------------------------------------------------------------------------


async def test_rate_limit_is_waited_out_and_permanent_errors_recorded(
    parley: TestClient, fake: FakeSlack
) -> None:
    fake.fail("chat.postMessage", status=429, retry_after=1)
    await start_nps(parley, fake)
    await fake.wait_calls("chat.postMessage", 3)  # 1 refused + 2 delivered after Retry-After
    assert await count(parley, Answer) == 0
    fake.fail("conversations.open", error="user_not_found")
    from bot.channels.slack.delivery import Undeliverable

    runtime = parley.app[SLACK]
    with pytest.raises(Undeliverable):
        await runtime.respondents.start_flow(
            runtime.client, flow=runtime.catalog.get("nps"), team_id="T1", user_id="U_GONE"
        )
    assert len(fake.calls_to("conversations.open")) == 2  # no retry
    await wait_count(parley, fake, Event, 1, Event.kind == "slack.undeliverable")


async def test_server_errors_back_off_and_retry(parley: TestClient, fake: FakeSlack) -> None:
    fake.fail("chat.postMessage", status=503, error="service_unavailable")
    await start_nps(parley, fake)
    await fake.wait_calls("chat.postMessage", 3)
    await parley.app[SLACK].drain()
    first, again, question = posts(fake)  # one retry of the intro, then the question
    assert not first.result and again.result["ok"] and question.result["ok"]  # 503: no body
    assert again.args["text"] == first.args["text"]


async def test_crash_between_answer_and_reply_loses_neither(
    parley: TestClient, fake: FakeSlack
) -> None:
    """The answer is stored, the next question claimed, then posting fails hard; the recovery
    sweep posts it later, once."""

    await start_nps(parley, fake)
    _, question = await fake.wait_calls("chat.postMessage", 2)
    runtime = parley.app[SLACK]
    conversation_id = json.loads(question.args["blocks"][1]["elements"][0]["value"])["c"]
    reply = await crash_after_answering(runtime, conversation_id)
    assert len(posts(fake)) == 2
    assert await recover_once(runtime, after=timedelta(seconds=-1)) == 1
    follow_up = (await fake.wait_calls("chat.postMessage", 3))[2]
    assert "parley:form:why_low" in block_texts(follow_up)
    assert await recover_once(runtime, after=timedelta(seconds=-1)) == 0  # posted once

    # a DM acked but never handled (payload pending in the inbox) is handled by the sweep;
    # this one was stored before text was kept as typed: Slack's escapes are undone now
    await leave_dm_pending(
        runtime,
        "msg:lost",
        "Pricing &amp; plans",
        age=timedelta(minutes=5),
        asked=[reply.conversation_id, "why_low"],
    )
    assert await recover_once(runtime, after=timedelta(seconds=60)) == 1
    await wait_count(parley, fake, Answer, 2)
    assert await stored_values(parley) == [3, "Pricing & plans"]


async def test_a_dm_that_found_the_database_busy_is_left_for_the_sweep(
    parley: TestClient, fake: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Busy passes: "stop" must not be dropped because others held the person's row."""
    await start_nps(parley, fake)
    await fake.wait_calls("chat.postMessage", 2)
    runtime = parley.app[SLACK]
    surveys = runtime.surveys
    real = surveys.opt_out

    async def busy(**_kwargs: Any) -> bool:
        raise Busy("could not opt out just now; please try again")

    monkeypatch.setattr(surveys, "opt_out", busy)
    await dm(parley, "U1", "stop", msg_id="m-stop")
    await runtime.drain()
    assert not await surveys.is_opted_out(respondent_key="slack:T1:U1")
    monkeypatch.setattr(surveys, "opt_out", real)
    assert await recover_once(runtime, after=timedelta(seconds=-1)) == 1
    assert await surveys.is_opted_out(respondent_key="slack:T1:U1")
    assert await recover_once(runtime, after=timedelta(seconds=-1)) == 0  # handled once


async def test_a_question_sent_just_before_a_crash_is_found_in_the_dm_not_asked_twice(
    parley: TestClient, fake: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Posted, then the process died before recording it: the sweep finds the question in the
    DM's history by its metadata and records it instead of asking again (DESIGN.md)."""

    await start_nps(parley, fake)
    _, question = await fake.wait_calls("chat.postMessage", 2)

    def crash(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("the process died here")

    monkeypatch.setattr(store, "message_posted", crash)
    await post_action(parley, click("U1", question.posted, index=3))
    follow_up = (await fake.wait_calls("chat.postMessage", 3))[2]
    assert "parley:form:why_low" in block_texts(follow_up)
    runtime = parley.app[SLACK]
    await runtime.drain()
    monkeypatch.undo()
    assert await count(parley, SlackMessage, SlackMessage.ts.is_(None)) == 1  # in doubt
    # a long chat followed it (here 150 messages): the search reads on, page by page
    chat = fake.history[follow_up.posted["channel"]]
    chat += [{"text": f"chat {n}", "ts": f"1800000000.{n:06d}"} for n in range(150)]

    assert await recover_once(runtime, after=timedelta(seconds=-1)) == 1
    assert len(delivered(fake, "parley:form:why_low")) == 1  # not asked twice
    first, second = fake.calls_to("conversations.history")
    assert first.args["include_all_metadata"] in ("1", "true")
    assert second.args["cursor"] == first.result["response_metadata"]["next_cursor"]
    posted_ts = follow_up.result["ts"]
    assert await count(parley, SlackMessage, SlackMessage.ts == posted_ts) == 1
    assert await recover_once(runtime, after=timedelta(seconds=-1)) == 0

    await dm(parley, "U1", "Too pricey", msg_id="m-after")  # answers the found message
    # the score's question was closed as the failure passed; then the found one
    score, found = await fake.wait_calls("chat.update", 2)
    assert (score.args["ts"], found.args["ts"]) == (question.posted["ts"], posted_ts)


async def crash_after_answering(runtime: Any, conversation_id: str) -> Any:
    """U1's score 3 is recorded and the follow-up claimed, then the process dies before
    posting it (as the crash leaves the database)."""
    reply = await runtime.surveys.answer(
        conversation_id=conversation_id, respondent_key="slack:T1:U1", step="score", value=3
    )
    claim = partial(
        store.claim_message,
        conversation_id=conversation_id,
        step="why_low",
        respondent_key="slack:T1:U1",
        team_id="T1",
        question="",
    )
    assert await runtime.db.run(claim)
    return reply


async def leave_dm_pending(
    runtime: Any, key: str, text: str, *, age: Any, asked: list[str] | None = None
) -> None:
    """A DM from U1 acked ``age`` ago but never handled, as a crash leaves it (kept 24 h);
    ``asked``: the [conversation, step] that was open when it arrived."""

    payload = {"team_id": "T1", "user": "U1", "channel": "DU1", "text": text, "asked": asked}
    claim = partial(store.claim_delivery, key=key, ttl=timedelta(hours=24), team_id="T1")
    await runtime.db.run(partial(claim, payload=payload, now=store.utcnow() - age))


async def nps_then_slack_down(parley: TestClient, fake: FakeSlack) -> Any:
    """U1 is asked the NPS question, then Slack refuses the next three posts (a first try
    and the client's two retries): the reply to whatever U1 does next cannot be posted."""
    await start_nps(parley, fake)
    _, question = await fake.wait_calls("chat.postMessage", 2)
    fake.fail("chat.postMessage", status=503, error="service_unavailable", times=3)
    return question


def delivered(fake: FakeSlack, form: str) -> list[Any]:
    """Posts Slack accepted that carry the given question form."""
    return [c for c in posts(fake) if c.result.get("ok") and form in block_texts(c)]


async def test_slack_down_after_a_click_keeps_the_next_question_for_the_sweep(
    parley: TestClient, fake: FakeSlack
) -> None:

    question = await nps_then_slack_down(parley, fake)
    await post_action(parley, click("U1", question.posted, index=3))
    await wait_count(parley, fake, Answer, 1)
    await fake.wait_calls("chat.postMessage", 5)
    assert not delivered(fake, "parley:form:why_low")
    runtime = parley.app[SLACK]
    await runtime.drain()  # the click's handler has given up (after the client's retries)
    # the answered question lost its buttons all the same (nothing would update it later)
    closed = [c for c in fake.calls_to("chat.update") if c.args["ts"] == question.posted["ts"]]
    assert closed and "Your answer: 3" in json.dumps(closed[0].args["blocks"])
    assert await recover_once(runtime, after=timedelta(seconds=-1)) == 1  # Slack is back
    assert len(delivered(fake, "parley:form:why_low")) == 1
    assert await recover_once(runtime, after=timedelta(seconds=-1)) == 0  # once


async def test_an_error_that_will_not_pass_is_not_retried_by_the_sweep(
    parley: TestClient, fake: FakeSlack
) -> None:

    await start_nps(parley, fake)
    _, question = await fake.wait_calls("chat.postMessage", 2)
    fake.fail("chat.postMessage", error="invalid_blocks", times=100)
    await post_action(parley, click("U1", question.posted, index=3))
    await wait_count(parley, fake, Answer, 1)
    runtime = parley.app[SLACK]
    await runtime.drain()
    tried = len(posts(fake))
    for _ in range(3):
        assert await recover_once(runtime, after=timedelta(seconds=-1)) == 0
    assert len(posts(fake)) == tried  # released, not retried every pass


async def test_a_question_still_failing_after_a_day_is_given_up_and_recorded(
    parley: TestClient, fake: FakeSlack
) -> None:

    await start_nps(parley, fake)
    _, question = await fake.wait_calls("chat.postMessage", 2)
    fake.fail("chat.postMessage", status=503, error="service_unavailable", times=1000)
    await post_action(parley, click("U1", question.posted, index=3))
    await wait_count(parley, fake, Answer, 1)
    runtime = parley.app[SLACK]
    await runtime.drain()
    tried = len(posts(fake))
    assert await recover_once(runtime, after=timedelta(seconds=-1)) == 0
    assert len(posts(fake)) > tried  # a passing failure: tried again on the next pass
    assert await count(parley, SlackMessage, SlackMessage.ts.is_(None)) == 1

    # an old conversation is no reason to give up: only a day of failing claims is
    day_ago = store.utcnow() - timedelta(days=1, minutes=1)
    await runtime.db.run(lambda conn: conn.execute(update(Conversation).values(updated_at=day_ago)))
    assert await recover_once(runtime, after=timedelta(seconds=-1)) == 0
    assert len(posts(fake)) > tried
    assert await count(parley, SlackMessage, SlackMessage.ts.is_(None)) == 1
    first = update(SlackMessage).values(first_claimed_at=day_ago)
    await runtime.db.run(lambda conn: conn.execute(first))
    tried = len(posts(fake))
    assert await recover_once(runtime, after=timedelta(seconds=-1)) == 0
    assert len(posts(fake)) == tried  # given up, not posted again
    assert await count(parley, SlackMessage, SlackMessage.ts.is_(None)) == 0
    assert await count(parley, Event, Event.kind == "slack.undeliverable") == 1
    assert await count(parley, Answer) == 1  # the answer itself stays
    await recover_once(runtime, after=timedelta(seconds=-1))
    assert len(posts(fake)) == tried


async def test_two_sweeps_giving_up_the_same_question_record_it_once(
    parley: TestClient, fake: FakeSlack
) -> None:
    """Replicas sweep at the same time: the row both read is dropped by one of them."""
    runtime = parley.app[SLACK]
    await start_nps(parley, fake)
    _, question = await fake.wait_calls("chat.postMessage", 2)
    fake.fail("chat.postMessage", status=503, error="service_unavailable", times=3)
    await post_action(parley, click("U1", question.posted, index=3))
    await wait_count(parley, fake, SlackMessage, 1, SlackMessage.ts.is_(None))
    await runtime.drain()
    day_ago = store.utcnow() - timedelta(days=1, minutes=1)
    stuck = update(SlackMessage).values(first_claimed_at=day_ago, claimed_at=day_ago)
    await runtime.db.run(lambda conn: conn.execute(stuck))

    def both_sweeps(conn: Any) -> int:
        rows = [store.MessageRow(*row) for row in conn.execute(select(*store._MESSAGE_COLUMNS))]
        original = conn.execute
        conn.execute = lambda query, *a, **k: (  # the other replica read the same row
            _Rows(rows) if "FROM slack_message" in str(query) else original(query, *a, **k)
        )
        try:
            first = store.give_up_messages(
                conn, older_than=store.utcnow(), stale_before=store.utcnow()
            )
            second = store.give_up_messages(
                conn, older_than=store.utcnow(), stale_before=store.utcnow()
            )
        finally:
            del conn.execute
        return len(first) + len(second)

    assert await runtime.db.run(both_sweeps) == 1
    assert await count(parley, Event, Event.kind == "slack.undeliverable") == 1


class _Rows(list):  # type: ignore[type-arg]
    def __init__(self, rows: list[Any]) -> None:
        super().__init__(tuple(vars(r).values()) for r in rows)


async def test_a_team_join_left_pending_by_a_crash_is_not_replayed_as_a_dm(
    parley: TestClient, fake: FakeSlack
) -> None:
    """Such a delivery keeps no DM payload: the sweep lets it go instead of greeting user
    "" in channel "" (its payload is stored as JSON null, which is not SQL NULL)."""
    runtime = parley.app[SLACK]
    claim = partial(store.claim_delivery, key="ev:join", ttl=timedelta(hours=24), team_id="T1")
    await runtime.db.run(partial(claim, payload=None, now=store.utcnow() - timedelta(minutes=10)))
    await recover_once(runtime, after=timedelta(seconds=-1))
    assert posts(fake) == [] and fake.calls_to("users.info") == []
    assert await count(parley, Respondent) == 0
    assert await count(parley, SlackInbox, SlackInbox.status == "pending") == 0


async def test_slack_down_after_a_typed_answer_neither_loses_nor_reuses_it(
    parley: TestClient, fake: FakeSlack
) -> None:

    await nps_then_slack_down(parley, fake)
    await dm(parley, "U1", "3", msg_id="m-typed")
    await wait_count(parley, fake, Answer, 1)
    # finished with the answer, although the reply failed: the sweep must not take "3" again
    await wait_count(
        parley, fake, SlackInbox, 1, SlackInbox.key == "msg:m-typed", SlackInbox.status == "done"
    )
    runtime = parley.app[SLACK]
    await runtime.drain()
    assert await recover_once(runtime, after=timedelta(seconds=-1)) == 1
    assert len(delivered(fake, "parley:form:why_low")) == 1
    assert await count(parley, Answer) == 1


async def test_a_dm_that_fails_before_its_answer_stays_pending_for_the_sweep(
    parley: TestClient, fake: FakeSlack
) -> None:

    fake.fail("conversations.open", status=503, error="service_unavailable", times=3)
    fake.fail("chat.postMessage", status=503, error="service_unavailable", times=3)
    await dm(parley, "U5", "Product", msg_id="m-hi")  # the welcome flow cannot be posted
    await fake.wait_calls("chat.postMessage", 3)
    await wait_count(
        parley, fake, SlackInbox, 1, SlackInbox.key == "msg:m-hi", SlackInbox.status == "pending"
    )
    runtime = parley.app[SLACK]
    await runtime.drain()
    await recover_once(runtime, after=timedelta(seconds=-1))
    assert delivered(fake, "What is your role")
    assert await count(parley, Answer) == 0  # "Product" was not written to that question
    await wait_count(
        parley, fake, SlackInbox, 1, SlackInbox.key == "msg:m-hi", SlackInbox.status == "done"
    )


async def test_a_late_dm_never_answers_a_question_it_was_not_written_to(
    parley: TestClient, fake: FakeSlack
) -> None:

    await nps_then_slack_down(parley, fake)
    await dm(parley, "U1", "it is great", msg_id="m-early")  # refused; the refusal fails
    await fake.wait_calls("chat.postMessage", 5)
    runtime = parley.app[SLACK]
    await runtime.drain()
    await dm(parley, "U1", "3", msg_id="m-score")  # Slack is back: the score, then why_low
    await wait_count(parley, fake, Answer, 1)
    await runtime.drain()
    await recover_once(runtime, after=timedelta(seconds=-1))
    assert await count(parley, Answer) == 1  # "it is great" is no answer to why_low
    await wait_count(
        parley, fake, SlackInbox, 1, SlackInbox.key == "msg:m-early", SlackInbox.status == "done"
    )


async def test_a_dm_that_keeps_failing_is_dropped_when_its_key_expires(
    parley: TestClient, fake: FakeSlack
) -> None:

    runtime = parley.app[SLACK]
    await leave_dm_pending(runtime, "msg:old", "hi", age=timedelta(hours=25))
    assert await recover_once(runtime, after=timedelta(seconds=-1)) == 0
    assert await count(parley, SlackInbox, SlackInbox.key == "msg:old") == 0  # given up, purged
    assert posts(fake) == []  # not handled: "hi" would have started the welcome flow


# --- OAuth and Socket Mode --------------------------------------------------------------------------------


async def test_oauth_install_round_trip(
    aiohttp_client: Any, fake: FakeSlack, flows: Path, tmp_path: Path
) -> None:
    settings = parley_settings(
        fake,
        str(tmp_path / "oauth.db"),
        flows,
        slack_bot_token="",
        slack_client_id="111.222",
        slack_client_secret="shh",
        public_url="https://parley.example.com",
        researchers=f"{slack_fake.TEAM}:U_RES,{slack_fake.TEAM}:@research",  # say whose: many workspaces
    )
    client = await aiohttp_client(create_app(settings))
    install = await client.get("/slack/install", allow_redirects=False)
    assert install.status in (200, 302)
    page = await install.text()
    location = install.headers.get("Location") or page
    assert "client_id=111.222" in location and "chat%3Awrite" in location.replace(":", "%3A")
    state = location.split("state=")[1].split("&")[0].split('"')[0]
    cookie = install.headers["Set-Cookie"].split(";")[0]
    done = await client.get(
        f"/slack/oauth_redirect?code=abc&state={state}", headers={"Cookie": cookie}
    )
    assert done.status == 200, await done.text()
    assert fake.calls_to("oauth.v2.access")[0].args["code"] == "abc"
    async with client.app[DATABASE].engine.connect() as conn:
        rows = (
            await conn.execute(
                select(slack_installations.c.team_id, slack_installations.c.bot_token)
            )
        ).all()
    assert rows == [("T2", "xoxb-installed")]
    # an event from the new workspace is answered with its own token
    body = event_body(dm_event("U5", "hi", client_msg_id="m-t2"), event_id="Ev-t2", team="T2")
    assert (await post_event(client, body)).status == 200
    posted = await fake.wait_calls("chat.postMessage", 2)
    assert {c.token for c in posted} == {"xoxb-installed"}
    # work outside a request (the sweep, campaigns) gets that token and the same client set-up
    runtime = client.app[SLACK]
    team = await runtime.client_for("T2")
    assert team.token == "xoxb-installed"
    assert (team.timeout, team.logger, team.base_url) == (
        runtime.client.timeout,
        runtime.client.logger,
        runtime.client.base_url,
    )
    assert [type(h) for h in team.retry_handlers] == [
        type(h) for h in runtime.client.retry_handlers
    ]


async def test_socket_mode(
    aiohttp_client: Any, fake: FakeSlack, flows: Path, tmp_path: Path
) -> None:
    settings = parley_settings(
        fake,
        str(tmp_path / "socket.db"),
        flows,
        slack_signing_secret="",
        slack_app_token="xapp-1-test",
    )
    client = await aiohttp_client(create_app(settings))
    await fake.wait_calls("apps.connections.open", 1)
    # no signing secret: nothing could verify an HTTP request, so none is taken
    forged = slash_command("U_RES", "results nps", response_url=fake.base_url + "/response/8")
    refused = await client.post(
        "/slack/events",
        data=forged,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert refused.status == 404
    assert fake.calls_to("response_url") == []
    await fake.send_envelope(
        {
            "envelope_id": "env-1",
            "type": "slash_commands",
            "accepts_response_payload": True,
            "payload": {
                "team_id": "T1",
                "user_id": "U_RES",
                "command": "/survey",
                "text": "help",
                "channel_id": "C1",
                "response_url": fake.base_url + "/response/9",
                "trigger_id": "1.2",
            },
        }
    )
    acks = await fake.wait_for(
        lambda: [m for m in fake.ws_received if m.get("envelope_id") == "env-1"]
    )
    assert acks[0]["envelope_id"] == "env-1"
    helped = (await fake.wait_calls("response_url", 1))[0]
    assert "/survey flows" in helped.args["text"]
    await fake.send_envelope(
        {
            "envelope_id": "env-2",
            "type": "events_api",
            "accepts_response_payload": False,
            "retry_attempt": 0,
            "payload": json.loads(
                event_body(dm_event("U3", "hi", client_msg_id="m-sock"), event_id="Ev-sock")
            ),
        }
    )
    await fake.wait_for(lambda: [m for m in fake.ws_received if m.get("envelope_id") == "env-2"])
    await fake.wait_calls("chat.postMessage", 2)


async def test_web_only_without_slack_settings(
    aiohttp_client: Any, tmp_path: Path, flows: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="parley")
    client = await aiohttp_client(
        create_app(
            load_settings(
                db=str(tmp_path / "w.db"),
                flows=flows,
                slack_bot_token="",
                slack_app_token="",
                slack_client_id="",
            )
        )
    )
    assert (await client.post("/slack/events", data="{}")).status in (404, 405)
    assert sum("running web-only" in r.getMessage() for r in caplog.records) == 1


async def test_start_up_says_plainly_when_slack_refuses_the_token(
    aiohttp_client: Any,
    fake: FakeSlack,
    flows: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One clear line at start-up, not Bolt's error on every event. The token also set in
    the environment (Bolt reads it itself) must not add a warning about it."""
    caplog.set_level("INFO", logger="parley")
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-test")
    fake.fail("auth.test", error="invalid_auth")
    settings = parley_settings(fake, str(tmp_path / "t.db"), flows, researchers="")
    await aiohttp_client(create_app(settings))
    await fake.wait_calls("auth.test", 1)
    await fake.wait_for(lambda: any("refused" in r.getMessage() for r in caplog.records))
    refused = [r for r in caplog.records if "Slack refused SLACK_BOT_TOKEN" in r.getMessage()]
    assert len(refused) == 1 and refused[0].levelname == "ERROR"
    assert "invalid_auth" in refused[0].getMessage() and "xoxb-" in refused[0].getMessage()
    messages = [r.getMessage() for r in caplog.records]
    assert not any("will be unused" in m for m in messages)
    assert any("nobody may use /survey yet" in m for m in messages)


async def test_start_up_names_the_bot_and_workspace_signed_in(
    parley: TestClient, fake: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    await fake.wait_calls("auth.test", 1)
    runtime = parley.app[SLACK]
    from bot.channels.slack.app import check_token

    caplog.set_level("INFO", logger="parley")
    assert await check_token(runtime.client)
    assert any("signed in as" in r.getMessage() for r in caplog.records)


async def test_app_home_with_many_open_surveys_keeps_its_opt_out(
    parley: TestClient, fake: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Home view holds 100 blocks: a long list of open surveys must not push the opt-out
    toggle (or the research part) off its end."""
    from bot.channels.slack import home

    runtime = parley.app[SLACK]
    reply = await start_nps(parley, fake)
    many = [reply] * 150

    async def open_conversations(**_: Any) -> list[Any]:
        return many

    monkeypatch.setattr(runtime.surveys, "open_conversations", open_conversations)
    view = await home.build(runtime, runtime.client, team_id=slack_fake.TEAM, user_id="U_RES")
    text = json.dumps(view, ensure_ascii=False)
    assert len(view["blocks"]) <= 100
    assert home.blocks.HOME_OPT_OUT in text and "Research" in text
    assert "…and 130 more waiting" in text


async def test_closing_words_slack_refused_are_said_later_and_once(
    parley: TestClient, fake: FakeSlack
) -> None:
    """The survey's last words are claimed like a question: Slack down when they go out, the
    sweep says them; said already when a crash came, the sweep finds them and says nothing."""
    await nps_follow_up(parley, fake, score=4)
    fake.fail("chat.postMessage", status=503, error="service_unavailable", times=3)
    await dm(parley, "U1", "Too slow", msg_id="m-last")
    await wait_count(parley, fake, Answer, 2)
    runtime = parley.app[SLACK]
    await runtime.drain()

    def said() -> list[Any]:
        return [c for c in posts(fake) if c.result.get("ok")][3:]  # after intro, two questions

    assert said() == []
    assert await recover_once(runtime, after=timedelta(seconds=-1)) == 1
    (closing,) = said()
    assert "parley:" not in block_texts(closing)  # words, no question
    assert await recover_once(runtime, after=timedelta(seconds=-1)) == 0
    assert await count(parley, SlackMessage) == 0


async def test_closing_words_said_just_before_a_crash_are_not_said_twice(
    parley: TestClient, fake: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    await nps_follow_up(parley, fake, score=4)

    def crash_on_closing(conn: Any, **where: Any) -> None:
        raise RuntimeError("the process died here")  # said, not yet recorded

    monkeypatch.setattr(store, "closing_said", crash_on_closing)
    await dm(parley, "U1", "Too slow", msg_id="m-last")
    runtime = parley.app[SLACK]
    await fake.wait_calls("chat.postMessage", 4)
    await runtime.drain()
    monkeypatch.undo()
    assert await count(parley, SlackMessage) == 1  # the claim, in doubt
    assert await recover_once(runtime, after=timedelta(seconds=-1)) == 1
    assert len(posts(fake)) == 4  # found in the DM by its tag: not said again
    assert await count(parley, SlackMessage) == 0


CLOSING_FLOW = """\
id: closing
kind: microsurvey
title: Closing
anonymous: true
expires_after: 7d
outro: Bye now.
steps:
  - {id: ok, type: yes_no, text: "All fine?"}
  - {id: next, type: message, text: "Here is what happens next."}
"""


async def refused_closing_words(parley: TestClient, fake: FakeSlack, flows: Path) -> Any:
    """U1 answers the one question of an anonymous flow while Slack refuses every try of
    its closing words (a message step, then the outro)."""
    (flows / "closing.yml").write_text(CLOSING_FLOW)
    runtime = parley.app[SLACK]
    runtime.catalog.refresh(force=True)
    await runtime.respondents.start_flow(
        runtime.client, flow=runtime.catalog.get("closing"), team_id=slack_fake.TEAM, user_id="U1"
    )
    question = (await fake.wait_calls("chat.postMessage", 1))[0]
    fake.fail("chat.postMessage", status=503, error="service_unavailable", times=3)
    await post_action(parley, click("U1", question.posted, text="Yes"))
    await runtime.drain()
    return runtime


async def test_the_sweep_says_the_very_closing_words_that_were_refused(
    parley: TestClient, fake: FakeSlack, flows: Path
) -> None:
    """Not what the closed conversation could rebuild (an anonymous one forgot its answers,
    and with them which words its path led to): the words kept with the claim."""
    runtime = await refused_closing_words(parley, fake, flows)
    assert await recover_once(runtime, after=timedelta(seconds=-1)) == 1
    said = [c for c in posts(fake) if c.result.get("ok")][1:]
    assert len(said) == 1
    assert "Here is what happens next." in block_texts(said[0])
    assert "Bye now." in block_texts(said[0]) and "everything" not in block_texts(said[0])


async def test_no_closing_words_after_an_opt_out(
    parley: TestClient, fake: FakeSlack, flows: Path
) -> None:
    runtime = await refused_closing_words(parley, fake, flows)
    await dm(parley, "U1", "stop", msg_id="m-stop")
    await wait_count(parley, fake, Respondent, 1, Respondent.opted_out.is_(True))
    await runtime.drain()
    posted = len(posts(fake))
    await recover_once(runtime, after=timedelta(seconds=-1))
    assert len(posts(fake)) == posted
    assert await count(parley, SlackMessage) == 0
