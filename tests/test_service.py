"""The conversation service against a real database (SQLite, and PostgreSQL when configured):
resume, idempotency under concurrency, one open conversation per flow, opt-out, version pinning,
expiry, anonymous flows, export and forget."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, func, insert, select, text

from bot.errors import (
    Busy,
    ConversationClosed,
    ConversationNotFound,
    FlowError,
    FlowNotFound,
    InvalidAnswer,
    NotCurrentStep,
    NotYourConversation,
    OptedOut,
    RecentlySurveyed,
    RespondentNotFound,
)
from bot.services import anonymous, conversations, export, privacy
from bot.services.catalog import FlowCatalog
from bot.services.conversations import Surveys
from bot.services.results import flow_results, render_text
from bot.store.database import Database
from bot.store.models import (
    Answer,
    Conversation,
    Event,
    FlowVersion,
    PendingAnonymousAnswer,
    Respondent,
    Suppression,
    Tag,
    utcnow,
)

NPS = """
id: nps
kind: microsurvey
title: NPS
expires_after: 7d
steps:
  - id: score
    type: nps
    text: How likely?
    tags:
      - {when: "score <= 6", add: nps:detractor}
      - {when: "score >= 9", add: nps:promoter}
  - id: why
    type: text
    text: Why {{score}}?
  - id: role
    type: choice
    text: Your role?
    save_as: role
    choices:
      - {value: pm, label: PM, tags: {firmographic:pm: 1}}
      - {value: eng, label: Engineer}
"""

ANON_TWO = """
id: anon_two
kind: microsurvey
title: Anonymous pulse, two questions
anonymous: true
steps:
  - id: mood
    type: csat
    text: How are you?
  - id: why
    type: text
    text: Why?
"""

ANON = """
id: anon
kind: microsurvey
title: Anonymous pulse
anonymous: true
steps:
  - id: mood
    type: csat
    text: How are you?
"""


@pytest.fixture
def flows(tmp_path: Path) -> Path:
    root = tmp_path / "flows"
    root.mkdir()
    (root / "nps.yml").write_text(textwrap.dedent(NPS).lstrip())
    (root / "anon.yml").write_text(textwrap.dedent(ANON).lstrip())
    (root / "anon_two.yml").write_text(textwrap.dedent(ANON_TWO).lstrip())
    return root


@pytest.fixture
def svc(database: Database, flows: Path) -> Surveys:
    return Surveys(database, FlowCatalog(flows))


async def count(db: Database, model: type) -> int:
    async with db.reads() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


async def complete(svc: Surveys, key: str, score: int = 9) -> str:
    reply = await svc.start(flow_id="nps", respondent_key=key, channel="test")
    await svc.answer(
        conversation_id=reply.conversation_id, respondent_key=key, step="score", value=score
    )
    await svc.answer(
        conversation_id=reply.conversation_id, respondent_key=key, step="why", value="because"
    )
    await svc.answer(
        conversation_id=reply.conversation_id, respondent_key=key, step="role", value="pm"
    )
    return reply.conversation_id


async def test_start_answer_complete_stores_answers_tags_and_profile(
    svc: Surveys, database: Database
) -> None:
    conversation_id = await complete(svc, "t:ann", score=4)
    async with database.reads() as session:
        answers = (await session.execute(select(Answer).order_by(Answer.id))).scalars().all()
        assert [(a.step_id, a.value) for a in answers] == [
            ("score", 4),
            ("why", "because"),
            ("role", "pm"),
        ]
        version = await session.get(FlowVersion, answers[0].flow_version_id)
        assert version is not None and version.hash == svc.catalog.get("nps").hash
        tags = (await session.execute(select(Tag).order_by(Tag.id))).scalars().all()
        assert [(t.dimension, t.segment, t.weight, t.source) for t in tags] == [
            ("nps", "detractor", 1.0, "nps.score"),
            ("firmographic", "pm", 1.0, "nps.role"),
        ]
        respondent = (await session.execute(select(Respondent))).scalar_one()
        assert respondent.attributes == {"role": "pm"}
        conversation = await session.get(Conversation, conversation_id)
        assert (
            conversation is not None
            and conversation.status == "completed"
            and conversation.open_key is None
        )
        assert conversation.started_at <= conversation.completed_at  # type: ignore[operator]
        # the row tells the conversation's life: no event repeats it
        assert (await session.execute(select(Event.kind))).scalars().all() == []


async def test_start_twice_resumes_the_open_conversation(svc: Surveys) -> None:
    first = await svc.start(flow_id="nps", respondent_key="t:bob", channel="test")
    assert first.created
    await svc.answer(
        conversation_id=first.conversation_id, respondent_key="t:bob", step="score", value=8
    )
    again = await svc.start(flow_id="nps", respondent_key="t:bob", channel="test")
    assert not again.created
    assert again.conversation_id == first.conversation_id
    assert again.step == "why"
    assert [m.to_dict()["text"] for m in again.outputs] == ["Why 8?"]


async def test_a_minted_key_is_stored_like_any_other_and_resumes_later(
    svc: Surveys, database: Database
) -> None:
    # A first visit skips the lookups; what it stores must match the looked-up path.
    first = await svc.start(flow_id="nps", respondent_key="web:new", channel="web", minted=True)
    other = await svc.start(flow_id="nps", respondent_key="web:old", channel="web")
    async with database.reads() as session:
        rows = {r.key: r for r in (await session.execute(select(Respondent))).scalars().all()}
        kinds = (await session.execute(select(Event.kind))).scalars().all()
    assert rows["web:new"].last_surveyed_at is not None
    assert rows["web:old"].last_surveyed_at is not None
    assert rows["web:new"].opted_out is False and rows["web:new"].attributes == {}
    assert kinds == []  # the two conversation rows say they started
    again = await svc.start(flow_id="nps", respondent_key="web:new", channel="web")
    assert not again.created and again.conversation_id == first.conversation_id
    assert other.conversation_id != first.conversation_id


async def test_concurrent_starts_open_one_conversation(svc: Surveys, database: Database) -> None:
    replies = await asyncio.gather(
        *[svc.start(flow_id="nps", respondent_key="t:cat", channel="test") for _ in range(6)]
    )
    assert len({r.conversation_id for r in replies}) == 1
    assert sum(r.created for r in replies) == 1
    assert await count(database, Conversation) == 1


async def test_double_submit_records_one_answer(svc: Surveys, database: Database) -> None:
    reply = await svc.start(flow_id="nps", respondent_key="t:dan", channel="test")
    results = await asyncio.gather(
        *[
            svc.answer(
                conversation_id=reply.conversation_id,
                respondent_key="t:dan",
                step="score",
                value="7",
            )
            for _ in range(5)
        ]
    )
    assert sorted(r.duplicate for r in results) == [False, True, True, True, True]
    assert all(r.step == "why" for r in results)
    assert await count(database, Answer) == 1
    # a different value for an answered step is a conflict, not an overwrite
    with pytest.raises(NotCurrentStep):
        await svc.answer(
            conversation_id=reply.conversation_id, respondent_key="t:dan", step="score", value=2
        )
    async with database.reads() as session:
        assert (await session.execute(select(Answer.value))).scalar_one() == 7


async def test_invalid_answer_changes_nothing(svc: Surveys, database: Database) -> None:
    reply = await svc.start(flow_id="nps", respondent_key="t:eve", channel="test")
    with pytest.raises(InvalidAnswer) as info:
        await svc.answer(
            conversation_id=reply.conversation_id, respondent_key="t:eve", step="score", value=12
        )
    assert info.value.step == "score"
    assert info.value.outputs[-1].step == "score"
    assert await count(database, Answer) == 0
    again = await svc.show(conversation_id=reply.conversation_id, respondent_key="t:eve")
    assert again.step == "score"


async def test_wrong_respondent_and_unknown_ids(svc: Surveys) -> None:
    reply = await svc.start(flow_id="nps", respondent_key="t:fay", channel="test")
    with pytest.raises(NotYourConversation):
        await svc.answer(
            conversation_id=reply.conversation_id, respondent_key="t:mallory", step="score", value=1
        )
    with pytest.raises(NotYourConversation):
        await svc.show(conversation_id=reply.conversation_id, respondent_key="t:mallory")
    with pytest.raises(ConversationNotFound):
        await svc.show(conversation_id="0" * 32, respondent_key="t:fay")
    with pytest.raises(FlowNotFound, match="no flow called 'nope'"):
        await svc.start(flow_id="nope", respondent_key="t:fay", channel="test")


async def test_finished_conversation_refuses_answers_and_restart_opens_new(svc: Surveys) -> None:
    first = await complete(svc, "t:gus")
    with pytest.raises(ConversationClosed, match="already completed"):
        await svc.answer(
            conversation_id=first, respondent_key="t:gus", step="why", value="changed my mind"
        )
    repeat = await svc.answer(
        conversation_id=first, respondent_key="t:gus", step="role", value="pm"
    )
    assert repeat.duplicate and repeat.done  # a retried last answer is answered, not refused
    stopped = await svc.stop(conversation_id=first, respondent_key="t:gus")
    assert stopped.status == "completed"
    again = await svc.start(flow_id="nps", respondent_key="t:gus", channel="test")
    assert again.created and again.conversation_id != first


async def test_opt_out_sticks_and_survives_forget(svc: Surveys, database: Database) -> None:
    reply = await svc.start(flow_id="nps", respondent_key="t:hal", channel="test")
    assert await svc.opt_out(respondent_key="t:hal", source="test")
    assert not await svc.opt_out(respondent_key="t:hal", source="test")  # idempotent
    with pytest.raises(OptedOut):
        await svc.answer(
            conversation_id=reply.conversation_id, respondent_key="t:hal", step="score", value=5
        )
    with pytest.raises(OptedOut):
        await svc.start(flow_id="nps", respondent_key="t:hal", channel="test")
    async with database.reads() as session:
        conversation = await session.get(Conversation, reply.conversation_id)
        assert conversation is not None and conversation.status == "stopped"
    done = await privacy.forget(database, key="t:hal")
    assert done.still_suppressed
    assert await count(database, Respondent) == 0
    assert await count(database, Suppression) == 1
    with pytest.raises(OptedOut):  # a new row for the same key comes back opted out
        await svc.start(flow_id="nps", respondent_key="t:hal", channel="test")


async def test_editing_a_flow_keeps_conversations_on_their_version(
    svc: Surveys, flows: Path, database: Database
) -> None:
    reply = await svc.start(flow_id="nps", respondent_key="t:ivy", channel="test")
    old_hash = svc.catalog.get("nps").hash
    path = flows / "nps.yml"
    path.write_text(
        path.read_text()
        .replace("Why {{score}}?", "What drove your {{score}}?")
        .replace("  - id: role", "  - id: extra\n    type: yes_no\n    text: More?\n  - id: role")
    )
    svc.catalog.reload()
    assert svc.catalog.get("nps").hash != old_hash
    r1 = await svc.answer(
        conversation_id=reply.conversation_id, respondent_key="t:ivy", step="score", value=10
    )
    assert (
        r1.outputs[0].to_dict()["text"] == "Why 10?"
    )  # the old wording: the version it started on
    r2 = await svc.answer(
        conversation_id=reply.conversation_id, respondent_key="t:ivy", step="why", value="great"
    )
    assert r2.step == "role"  # the new 'extra' step is not part of this conversation
    fresh = await svc.start(flow_id="nps", respondent_key="t:joe", channel="test")
    r3 = await svc.answer(
        conversation_id=fresh.conversation_id, respondent_key="t:joe", step="score", value=10
    )
    assert r3.outputs[0].to_dict()["text"] == "What drove your 10?"
    assert await count(database, FlowVersion) == 2


async def test_edits_are_picked_up_and_broken_edits_keep_last_good_flows(
    svc: Surveys, flows: Path
) -> None:
    good = svc.catalog.get("nps").hash
    path = flows / "nps.yml"
    text = path.read_text()
    svc.catalog.refresh(force=True)
    assert svc.catalog.get("nps").hash == good  # nothing changed
    path.write_text(text.replace("How likely?", "How likely now?"))
    os.utime(path, (time.time() + 5, time.time() + 5))
    svc.catalog.refresh(force=True)
    edited = svc.catalog.get("nps").hash
    assert edited != good
    path.write_text("id: nps\nkind: nope\n")
    os.utime(path, (time.time() + 10, time.time() + 10))
    svc.catalog.refresh(force=True)
    assert svc.catalog.get("nps").hash == edited
    # whatever a broken edit raises (here a bug in loading itself), the service keeps going
    path.write_text(text)
    os.utime(path, (time.time() + 15, time.time() + 15))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(FlowCatalog, "reload", lambda self: 1 / 0)
        svc.catalog.refresh(force=True)
    assert svc.catalog.get("nps").hash == edited


def test_a_broken_draft_leaves_the_other_flows_working(flows: Path) -> None:
    """One researcher's half-written file must not take every live survey down."""
    (flows / "draft.yml").write_text(
        "id: draft\nkind: microsurvey\ntitle: D\nsteps:\n  - {id: a, type: txt, text: Hi}\n"
    )
    (flows / "copy.yml").write_text((flows / "anon.yml").read_text())  # id is not its name
    catalog = FlowCatalog(flows)
    assert {f.id for f in catalog.all()} == {"nps", "anon", "anon_two"}
    reported = "\n".join(str(p) for p in catalog.broken)
    assert "draft.yml:5" in reported and "unknown step type 'txt'" in reported
    assert "copy.yml:1:5: flow id 'anon' must match its file name" in reported
    for name in ("draft.yml", "copy.yml", "nps.yml", "anon.yml", "anon_two.yml"):
        (flows / name).write_text("id: x\nkind: nope\n")
    with pytest.raises(FlowError):  # nothing at all to serve: that is an error
        FlowCatalog(flows)


async def test_expired_conversation_is_closed_and_a_new_one_starts(
    database: Database, flows: Path
) -> None:
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    svc = Surveys(database, FlowCatalog(flows), clock=lambda: now[0])
    reply = await svc.start(flow_id="nps", respondent_key="t:kim", channel="test")
    assert [r.conversation_id for r in await svc.open_conversations(respondent_key="t:kim")] == [
        reply.conversation_id
    ]
    now[0] += timedelta(days=8)
    # a reload before the sweep ran already shows it expired, not a question that cannot
    # be answered any more (nor is it offered as open: Slack's Home, a DM)
    assert await svc.open_conversations(respondent_key="t:kim") == []
    shown = await svc.show(conversation_id=reply.conversation_id, respondent_key="t:kim")
    assert shown.done and shown.status == "expired" and shown.step is None
    with pytest.raises(ConversationClosed, match="expired"):
        await svc.answer(
            conversation_id=reply.conversation_id, respondent_key="t:kim", step="score", value=3
        )
    again = await svc.start(flow_id="nps", respondent_key="t:kim", channel="test")
    assert again.created and again.conversation_id != reply.conversation_id
    now[0] += timedelta(days=8)
    assert await svc.expire_due() == 1
    async with database.reads() as session:
        statuses = (await session.execute(select(Conversation.status))).scalars().all()
        assert sorted(statuses) == ["expired", "expired"]
    report = await flow_results(database, svc.catalog.get("nps"))  # the numbers add up
    assert (report.started, report.completed, report.open, report.expired) == (2, 0, 0, 2)
    assert "expired: 2" in render_text(report)


async def start_and_rate_mood(svc: Surveys, flow_id: str, key: str, mood: int) -> Any:
    """Start an anonymous test flow and answer its first question."""
    reply = await svc.start(flow_id=flow_id, respondent_key=key, channel="test")
    await svc.answer(
        conversation_id=reply.conversation_id, respondent_key=key, step="mood", value=mood
    )
    return reply


async def test_anonymous_flow_keeps_nothing_that_links_answers_to_the_person(
    svc: Surveys, database: Database
) -> None:
    reply = await start_and_rate_mood(svc, "anon", "t:lee", 4)
    # closing queued the answer: alone, it waits for others (or for a day) to join them
    assert await count(database, Answer) == 0 and await count(database, PendingAnonymousAnswer) == 1
    assert await anonymous.release(database) == 0
    report = await flow_results(database, svc.catalog.get("anon"))
    assert report.waiting == 1 and "1 anonymous response not counted yet" in render_text(report)
    assert await anonymous.release(database, max_wait=timedelta(0)) == 1
    assert await count(database, PendingAnonymousAnswer) == 0
    async with database.reads() as session:
        answer = (await session.execute(select(Answer))).scalar_one()
        if session.bind.dialect.name == "postgresql":  # not written by the closing transaction
            xmins = "SELECT (SELECT xmin::text FROM answer), (SELECT xmin::text FROM conversation)"
            answer_xmin, conversation_xmin = (await session.execute(text(xmins))).one()
            assert answer_xmin != conversation_xmin
        assert answer.value == 4
        assert answer.respondent_id is None and answer.conversation_id is None
        assert answer.response_id and answer.response_id != reply.conversation_id
        conversation = await session.get(Conversation, reply.conversation_id)
        assert conversation is not None and conversation.status == "completed"
        # neither its time nor its place in the table matches the conversation's
        assert answer.id is not None and answer.id < 0
        assert (answer.created_at.hour, answer.created_at.minute) == (0, 0)
        assert answer.created_at.date() == conversation.completed_at.date()
        assert answer.created_at != conversation.completed_at
        stored = json.loads(conversation.state)
        assert stored["answers"] == {} and stored["tags"] == {} and stored["response"] is None
        assert stored["steps_taken"] == 0 and stored["skipped"] == []  # the path tells, too
    assert await count(database, Tag) == 0
    records = [r async for r in export.export_answers(database, flow_id="anon")]
    assert records[0]["respondent"] is None
    assert records[0]["conversation"] == answer.response_id
    person = await privacy.export_respondent(database, key="t:lee")
    assert person["answers"] == []
    assert all(c["state"]["answers"] == {} for c in person["conversations"])
    # nothing of it is the person's any more: forget removes the person, the answer stays
    await privacy.forget(database, key="t:lee")
    assert await count(database, Answer) == 1


async def test_opting_out_mid_way_through_an_anonymous_flow_unlinks_its_answers(
    svc: Surveys, database: Database
) -> None:
    reply = await start_and_rate_mood(svc, "anon_two", "t:mo", 2)
    assert await svc.opt_out(respondent_key="t:mo", source="test")
    async with database.reads() as session:
        conversation = await session.get(Conversation, reply.conversation_id)
        assert conversation is not None and conversation.status == "stopped"
        stored = json.loads(conversation.state)
        assert stored["answers"] == {} and stored["response"] is None
        assert stored["status"] == "stopped"
    person = await privacy.export_respondent(database, key="t:mo")
    assert person["answers"] == [] and person["conversations"][0]["state"]["answers"] == {}
    assert await count(database, PendingAnonymousAnswer) == 1  # given, and nobody's
    assert await anonymous.release(database, min_responses=1) == 1
    assert await count(database, Answer) == 1


async def test_export_and_forget_one_person(svc: Surveys, database: Database) -> None:
    await complete(svc, "t:max", score=10)
    await complete(svc, "t:ned", score=2)
    data = await privacy.export_respondent(database, key="t:max")
    assert data["respondent"]["key"] == "t:max"
    assert [a["step_id"] for a in data["answers"]] == ["score", "why", "role"]
    assert {t["segment"] for t in data["tags"]} == {"promoter", "pm"}
    assert data["conversations"][0]["state"]["answers"]["score"] == 10
    done = await privacy.forget(database, key="t:max")
    assert done.counts == {
        "tags": 2,
        "answers": 3,
        "events": 0,  # none: a conversation's row tells its start and end
        "conversations": 1,
        "respondents": 1,
    }
    assert not done.still_suppressed
    remaining = [r async for r in export.export_answers(database, flow_id=None)]
    assert {r["respondent"] for r in remaining} == {"t:ned"}
    with pytest.raises(RespondentNotFound):
        await privacy.export_respondent(database, key="t:max")
    with pytest.raises(RespondentNotFound):
        await privacy.forget(database, key="t:max")


async def test_results_numbers(svc: Surveys, database: Database) -> None:
    for i, score in enumerate([10, 9, 8, 3, 0]):
        await complete(svc, f"t:r{i}", score=score)
    await svc.start(flow_id="nps", respondent_key="t:open", channel="test")
    seen: list[int] = []  # `parley results` drives its progress bar from this
    report = await flow_results(database, svc.catalog.get("nps"), on_answer=lambda: seen.append(1))
    assert len(seen) == 15  # 5 people x 3 answers
    assert (report.started, report.completed, report.open) == (6, 5, 1)
    assert report.completion_rate == pytest.approx(83.3)
    score = report.steps[0]
    assert score.scale is not None
    assert score.scale.score == 0.0  # 2 promoters, 1 passive, 2 detractors of 5
    assert score.scale.distribution[10] == 1 and score.scale.distribution[0] == 1
    role = next(s for s in report.steps if s.id == "role")
    assert role.choices == [("pm", "PM", 5)]
    why = next(s for s in report.steps if s.id == "why")
    assert len(why.recent) == 5 and why.recent[0]["text"] == "because"
    assert report.headline.startswith("6 responses · 83.3% completed · NPS +0")
    assert report.retired == 0


async def test_results_count_answers_to_steps_an_edit_removed_apart(
    svc: Surveys, database: Database, flows: Path
) -> None:
    await complete(svc, "t:before", score=9)
    path = flows / "nps.yml"
    path.write_text(
        path.read_text().replace("  - id: why\n    type: text", "  - id: why\n    type: yes_no")
    )
    svc.catalog.reload()
    report = await flow_results(database, svc.catalog.get("nps"))
    why = next(s for s in report.steps if s.id == "why")
    assert why.answers == 0 and report.retired == 1  # a text answer is no yes/no answer
    assert "1 answer to steps no longer in this flow" in render_text(report)
    assert report.to_dict()["answers_to_retired_steps"] == 1


async def test_results_count_answers_outside_a_narrowed_scale_apart(
    svc: Surveys, database: Database, flows: Path
) -> None:
    rate = "id: rate\nkind: microsurvey\ntitle: Rate\nsteps:\n  - {id: mood, type: rating, text: Mood, min: 1, max: 7}\n"
    (flows / "rate.yml").write_text(rate)
    svc.catalog.reload()
    for key, value in (("t:a", 6), ("t:b", 2)):
        reply = await svc.start(flow_id="rate", respondent_key=key, channel="test")
        await svc.answer(
            conversation_id=reply.conversation_id, respondent_key=key, step="mood", value=value
        )
    (flows / "rate.yml").write_text(rate.replace("max: 7", "max: 5"))
    svc.catalog.reload()
    report = await flow_results(database, svc.catalog.get("rate"))
    mood = report.steps[0]
    assert mood.answers == 1 and report.retired == 1
    assert mood.scale is not None and mood.scale.mean == 2


async def test_forget_and_export_cover_channel_tables(svc: Surveys, database: Database) -> None:
    from bot.store.slack import SlackDM, SlackInbox, SlackMessage

    conversation_id = await complete(svc, "slack:T1:U1", score=7)
    await complete(svc, "slack:T1:U2", score=8)

    def seed(conn: Connection) -> None:
        conn.execute(
            insert(SlackDM.__table__),
            [
                {"respondent_key": "slack:T1:U1", "channel": "D1", "updated_at": utcnow()},
                {"respondent_key": "slack:T1:U2", "channel": "D2", "updated_at": utcnow()},
            ],
        )
        conn.execute(
            insert(SlackInbox.__table__),
            {
                "key": "Ev1",
                "status": "pending",
                "respondent_key": "slack:T1:U1",
                "payload": {"text": "hi"},
                "created_at": utcnow(),
                "expires_at": utcnow(),
            },
        )
        conn.execute(
            insert(SlackMessage.__table__),
            {
                "conversation_id": conversation_id,
                "step": "score",
                "respondent_key": "slack:T1:U1",
                "channel": "D1",
                "ts": "1.0",
                "question": "How likely?",
                "claimed_at": utcnow(),
            },
        )

    await database.run(seed)
    data = await privacy.export_respondent(database, key="slack:T1:U1")
    assert [row["channel"] for row in data["channels"]["slack_dm"]] == ["D1"]
    assert data["channels"]["slack_message"][0]["ts"] == "1.0"
    done = await privacy.forget(database, key="slack:T1:U1")
    assert done.counts["slack_dm"] == 1 and done.counts["slack_message"] == 1
    assert done.counts["slack_inbox"] == 1  # a message not handled yet is the person's too
    assert await count(database, SlackDM) == 1  # the other person's row stays
    assert await count(database, SlackMessage) == 0

    # someone Parley holds no row for, yet a channel does (a DM channel, an event naming them
    # as Slack's undeliverable events did): forget finds those too
    def stranger(conn: Connection) -> None:
        dm = {"respondent_key": "slack:T1:U9", "channel": "D9", "updated_at": utcnow()}
        conn.execute(insert(SlackDM.__table__), dm)
        named = {"key": "slack:T1:U9", "error": "user_not_found", "method": "chat.postMessage"}
        conn.execute(
            insert(Event), {"kind": "slack.undeliverable", "data": named, "created_at": utcnow()}
        )

    await database.run(stranger)
    gone = await privacy.forget(database, key="slack:T1:U9")
    assert gone.counts == {"slack_dm": 1, "events": 1} and not gone.still_suppressed
    assert await count(database, SlackDM) == 1
    with pytest.raises(RespondentNotFound):
        await privacy.forget(database, key="slack:T1:U9")  # nothing of them left


async def test_expiry_sweep_works_in_batches_and_leaves_young_conversations(
    database: Database, flows: Path
) -> None:
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    svc = Surveys(database, FlowCatalog(flows), clock=lambda: now[0])
    for i in range(5):
        await svc.start(flow_id="nps", respondent_key=f"t:old{i}", channel="test")
    await svc.start(flow_id="anon", respondent_key="t:old-anon", channel="test")  # never expires
    now[0] += timedelta(days=6)
    young = await svc.start(flow_id="nps", respondent_key="t:young", channel="test")
    now[0] += timedelta(days=2)  # the first five are 8 days old, the young one 2
    assert await svc.expire_due(batch=2) == 5
    async with database.reads() as session:
        statuses = dict((await session.execute(select(Conversation.id, Conversation.status))).all())
    assert statuses[young.conversation_id] == "active"
    assert sorted(statuses.values()) == ["active", "active"] + ["expired"] * 5


async def test_profile_and_time_zone_are_updated_only_when_they_change(
    svc: Surveys, database: Database
) -> None:
    await svc.start(
        flow_id="nps",
        respondent_key="t:zoe",
        channel="test",
        attributes={"first_name": "Zoe"},
        timezone="Europe/Paris",
    )
    await svc.start(
        flow_id="anon",
        respondent_key="t:zoe",
        channel="test",
        attributes={"plan": "pro"},
        timezone="Europe/Paris",
    )
    async with database.reads() as session:
        zoe = (await session.execute(select(Respondent))).scalar_one()
        assert zoe.attributes == {"first_name": "Zoe", "plan": "pro"}
        assert zoe.timezone == "Europe/Paris"
    await svc.start(flow_id="nps", respondent_key="t:zoe", channel="test", timezone="America/Lima")
    async with database.reads() as session:
        assert (await session.execute(select(Respondent.timezone))).scalar_one() == "America/Lima"


async def test_within_writes_with_the_answer_or_not_at_all(
    svc: Surveys, database: Database
) -> None:
    """A channel's own writes (Slack's claim on the next question) share the answer's
    transaction: if they fail, the answer is not stored either, and the person may retry."""
    from bot.store import statements as sql

    started = await svc.start(flow_id="nps", respondent_key="web:w", channel="test")

    def failing(conn: Connection, reply: Any) -> None:
        sql.suppress(conn, key="marker", now=utcnow())
        raise RuntimeError("the channel could not claim the next question")

    with pytest.raises(RuntimeError):
        await svc.answer(
            conversation_id=started.conversation_id,
            respondent_key="web:w",
            step="score",
            value=9,
            within=failing,
        )
    assert await count(database, Answer) == 0
    assert not await database.read(lambda conn: sql.is_suppressed(conn, key="marker"))

    seen: list[str | None] = []

    def claiming(conn: Connection, reply: Any) -> None:
        sql.suppress(conn, key="marker", now=utcnow())
        seen.append(reply.step)

    reply = await svc.answer(
        conversation_id=started.conversation_id,
        respondent_key="web:w",
        step="score",
        value=9,
        within=claiming,
    )
    assert seen == [reply.step] and reply.step is not None
    assert await count(database, Answer) == 1
    assert await database.read(lambda conn: sql.is_suppressed(conn, key="marker"))


async def test_forget_leaves_no_copy_in_the_sqlite_files(
    sqlite_database: Database, flows: Path, tmp_path: Path
) -> None:
    """Deleted rows must not stay readable in free pages or in old WAL frames."""
    svc = Surveys(sqlite_database, FlowCatalog(flows))
    secret = "SECRET-SAUCE-" + "4" * 20
    for key in ("t:keep", "t:gone-person"):
        reply = await svc.start(flow_id="nps", respondent_key=key, channel="test")
        await svc.answer(
            conversation_id=reply.conversation_id, respondent_key=key, step="score", value=2
        )
        text = secret if key == "t:gone-person" else "fine"
        await svc.answer(
            conversation_id=reply.conversation_id, respondent_key=key, step="why", value=text
        )
    files = [tmp_path / "parley.db", tmp_path / "parley.db-wal"]
    assert any(secret.encode() in f.read_bytes() for f in files if f.exists())

    done = await privacy.forget(sqlite_database, key="t:gone-person")
    assert done.scrubbed
    for f in files:
        if f.exists():
            data = f.read_bytes()
            assert secret.encode() not in data and b"t:gone-person" not in data, f.name


async def test_the_frequency_cap_holds_but_never_blocks_a_resume(
    database: Database, flows: Path
) -> None:
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    svc = Surveys(database, FlowCatalog(flows), clock=lambda: now[0], recontact=timedelta(days=7))
    first = await complete(svc, "t:cap")
    now[0] += timedelta(days=3)
    for flow_id in ("nps", "anon"):  # the same flow again, or any other
        with pytest.raises(RecentlySurveyed) as err:
            await svc.start(flow_id=flow_id, respondent_key="t:cap", channel="test")
        assert err.value.until == datetime(2026, 1, 8, tzinfo=UTC)
    open_one = await svc.start(flow_id="nps", respondent_key="t:new", channel="test")
    now[0] += timedelta(days=1)
    again = await svc.start(flow_id="nps", respondent_key="t:new", channel="test")
    assert not again.created and again.conversation_id == open_one.conversation_id  # resume
    now[0] += timedelta(days=4, seconds=1)  # 7 days after the first start
    later = await svc.start(flow_id="nps", respondent_key="t:cap", channel="test")
    assert later.created and later.conversation_id != first


async def test_the_cap_holds_for_parallel_starts_of_different_flows(
    database: Database, flows: Path
) -> None:
    """Check and take in one statement: on PostgreSQL a read-then-write let them all in."""
    month_ago = utcnow() - timedelta(days=30)
    before = Surveys(database, FlowCatalog(flows), clock=lambda: month_ago)
    await before.start(flow_id="anon", respondent_key="t:par", channel="test")
    svc = Surveys(database, FlowCatalog(flows), recontact=timedelta(days=7))
    results = await asyncio.gather(
        *(
            svc.start(flow_id=f, respondent_key="t:par", channel="test")
            for f in ("nps", "anon_two")
        ),
        return_exceptions=True,
    )
    started = [r for r in results if not isinstance(r, BaseException) and r.created]
    refused = [r for r in results if isinstance(r, RecentlySurveyed)]
    assert (len(started), len(refused)) == (1, 1), results
    # the same flow twice at once is a double click: one conversation, the other resumes it
    same = await asyncio.gather(
        *(
            svc.start(flow_id=started[0].flow_id, respondent_key="t:par", channel="test")
            for _ in "ab"
        )
    )
    assert {r.conversation_id for r in same} == {started[0].conversation_id}


async def test_a_double_opt_out_confirms_once_and_raises_nothing(svc: Surveys) -> None:
    for i in range(5):
        key = f"t:dbl{i}"
        await svc.start(flow_id="nps", respondent_key=key, channel="test")
        changed = await asyncio.gather(
            svc.opt_out(respondent_key=key, source="test"),
            svc.opt_out(respondent_key=key, source="test"),
        )
        assert sorted(changed) == [False, True]


TEAM = """
id: team
kind: microsurvey
title: Team
steps:
  - id: size
    type: choice
    text: How big is your team?
    save_as: team_size
    choices: [{value: small, label: Small}, {value: large, label: Large}]
"""


async def test_answers_saving_to_one_profile_at_once_keep_both(
    database: Database, flows: Path
) -> None:
    """Each answer merges into the attributes as stored when it writes, under the row's lock
    (on PostgreSQL two answers read the same old attributes and the later write won)."""
    (flows / "team.yml").write_text(textwrap.dedent(TEAM).lstrip())
    svc = Surveys(database, FlowCatalog(flows))
    people = [f"web:profile-{n}" for n in range(12)]
    pairs = []
    for key in people:
        nps = await svc.start(flow_id="nps", respondent_key=key, channel="test")
        for step, value in (("score", 9), ("why", "fine")):
            await svc.answer(
                conversation_id=nps.conversation_id, respondent_key=key, step=step, value=value
            )
        team = await svc.start(flow_id="team", respondent_key=key, channel="test")
        pairs.append((key, nps.conversation_id, team.conversation_id))
    await asyncio.gather(
        *(
            svc.answer(conversation_id=c, respondent_key=key, step=step, value=value)
            for key, nps_id, team_id in pairs
            for c, step, value in ((nps_id, "role", "pm"), (team_id, "size", "large"))
        )
    )
    async with database.reads() as session:
        kept = [r.attributes for r in (await session.execute(select(Respondent))).scalars()]
    assert kept == [{"role": "pm", "team_size": "large"}] * len(people)


def fail_once(
    monkeypatch: pytest.MonkeyPatch, module: Any, name: str, error: Exception
) -> list[int]:
    """``module.name`` raises ``error`` on its first call only; returns the calls made."""
    original = getattr(module, name)
    calls: list[int] = []

    def patched(*args: Any, **kwargs: Any) -> Any:
        calls.append(len(calls) + 1)
        if len(calls) == 1:
            raise error
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, patched)
    return calls


async def flows_and_their_versions(db: Database) -> list[tuple[str, str]]:
    """Each conversation's flow and the flow of the version it is pinned to."""
    async with db.reads() as session:
        rows = await session.execute(
            select(Conversation.flow_id, FlowVersion.flow_id).join(
                FlowVersion, FlowVersion.id == Conversation.flow_version_id
            )
        )
        return [(conversation, version) for conversation, version in rows]


@pytest.mark.parametrize("error", ["database", "channel"])
async def test_a_start_that_rolled_back_does_not_leave_its_flow_version_cached(
    svc: Surveys, monkeypatch: pytest.MonkeyPatch, error: str
) -> None:
    """The first start of a flow stores its version; if that transaction rolls back (the
    database failed, or the channel's own part of it raised), the id must not stay cached:
    on SQLite the next flow stored reuses it, and this flow's conversations would run on it."""
    from sqlalchemy.exc import OperationalError

    from bot.store import statements

    def broken_within(conn: Any, reply: Any) -> None:
        raise ValueError("the channel's part failed")

    within = None
    if error == "database":
        lost = OperationalError("INSERT", {}, Exception("the connection was lost"))
        fail_once(monkeypatch, statements, "insert_conversation", lost)
    else:
        within = broken_within
    with pytest.raises((OperationalError, ValueError)):
        await svc.start(flow_id="nps", respondent_key="web:first", channel="test", within=within)
    await svc.start(flow_id="anon", respondent_key="web:other", channel="test")
    again = await svc.start(flow_id="nps", respondent_key="web:second", channel="test")
    assert again.created and again.flow_id == "nps"
    rows = await flows_and_their_versions(svc.db)
    assert all(conversation == version for conversation, version in rows), rows


async def test_forget_goes_again_when_a_new_row_of_the_person_got_in_its_way(
    svc: Surveys, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL a running server may write a conversation for the person while forget
    deletes (a foreign-key error): nothing was deleted, and forget simply runs again."""
    from sqlalchemy.exc import IntegrityError

    from bot.store import repo

    await complete(svc, "t:kim")
    raced = IntegrityError("DELETE", {}, Exception("a new conversation refers to them"))
    tries = fail_once(monkeypatch, repo, "delete_respondent", raced)
    done = await privacy.forget(database, key="t:kim")
    assert tries == [1, 2] and sum(done.counts.values()) > 0
    assert await count(database, Respondent) == 0


async def test_results_say_which_channel_the_responses_came_from(svc: Surveys) -> None:
    """A flow open to anyone on the web can be filled by a script: researchers see where its
    numbers come from."""
    await complete(svc, "t:one")
    await complete(svc, "t:two")
    web = await svc.start(flow_id="nps", respondent_key="web:three", channel="web")
    await svc.answer(
        conversation_id=web.conversation_id, respondent_key="web:three", step="score", value=3
    )
    report = await flow_results(svc.db, svc.catalog.get("nps"))
    assert report.channels == {"test": 2, "web": 1}
    assert report.to_dict()["responses_by_channel"] == {"test": 2, "web": 1}
    assert "by channel: test 2   web 1" in render_text(report)


async def test_endless_collisions_end_in_busy_and_store_nothing(
    svc: Surveys, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request that keeps colliding with others gives up with an error that says to try
    again (HTTP 503), not one that says the conversation is closed."""

    async def collides(_body: Any) -> Any:
        raise conversations._Conflict

    monkeypatch.setattr(database, "run", collides)
    with pytest.raises(Busy, match="please try again"):
        await svc.opt_out(respondent_key="t:busy", source="test")
    with pytest.raises(Busy, match="please try again"):
        await svc.start(flow_id="nps", respondent_key="t:busy", channel="test")
    with pytest.raises(Busy, match="try again"):
        await svc.stop(conversation_id="c" * 32, respondent_key="t:busy")
    monkeypatch.undo()
    assert not await svc.is_opted_out(respondent_key="t:busy")
    assert await count(database, Conversation) == 0


async def test_anonymous_answers_join_in_batches(svc: Surveys, database: Database) -> None:
    """Answers of several responses arrive together, so none can be told from the others by
    the transaction or the order that wrote it; fewer than MIN_RESPONSES wait (a day at most)."""
    for n in range(anonymous.MIN_RESPONSES - 1):
        await start_and_rate_mood(svc, "anon", f"t:a{n}", n + 1)
    assert await anonymous.release(database) == 0
    async with database.reads() as session:
        queued_ids = set(
            (await session.execute(select(PendingAnonymousAnswer.response_id))).scalars()
        )
    await start_and_rate_mood(svc, "anon", "t:last", 5)
    assert await anonymous.release(database) == anonymous.MIN_RESPONSES
    async with database.reads() as session:
        rows = (await session.execute(select(Answer))).scalars().all()
    assert sorted(a.value for a in rows) == [1, 2, 3, 4, 5]
    assert all(a.respondent_id is None and a.conversation_id is None for a in rows)
    assert len({a.response_id for a in rows}) == 5 and all(a.id < 0 for a in rows)

    # the same answers never join under their queued id (a copy of the queue, a backup,
    # must not find them), and each flow counts its own responses
    assert not {a.response_id for a in rows} & queued_ids
    await start_and_rate_mood(svc, "anon_two", "t:other", 3)
    assert await anonymous.release(database) == 0  # anon_two's one response waits alone


async def test_a_conversation_open_across_the_upgrade_keeps_one_row_per_answer(
    svc: Surveys, database: Database
) -> None:
    """Before answers were queued they were stored one by one: closing such a conversation
    queues only what is not stored yet."""
    reply = await start_and_rate_mood(svc, "anon_two", "t:old", 2)

    def stored_the_old_way(conn: Connection) -> None:
        conversation = conn.execute(
            select(Conversation.state, Conversation.flow_version_id).where(
                Conversation.id == reply.conversation_id
            )
        ).one()
        response = json.loads(conversation.state)["response"]
        conn.execute(
            insert(Answer),
            {
                "id": -7,
                "response_id": response,
                "flow_id": "anon_two",
                "flow_version_id": conversation.flow_version_id,
                "step_id": "mood",
                "step_type": "csat",
                "value": 2,
                "created_at": utcnow(),
            },
        )

    await database.run(stored_the_old_way)
    await svc.answer(
        conversation_id=reply.conversation_id, respondent_key="t:old", step="why", value="Busy"
    )
    assert await count(database, PendingAnonymousAnswer) == 1  # "why" only
    assert await anonymous.release(database, min_responses=1) == 1
    assert await count(database, Answer) == 2


async def test_two_replicas_releasing_at_once_store_each_answer_once(
    svc: Surveys, database: Database, db_url: str
) -> None:
    for n in range(anonymous.MIN_RESPONSES):
        await start_and_rate_mood(svc, "anon", f"t:r{n}", n + 1)
    other = Database(db_url)  # a second server on the same database
    try:
        moved = await asyncio.gather(anonymous.release(database), anonymous.release(other))
    finally:
        await other.dispose()
    assert sorted(moved) == [0, anonymous.MIN_RESPONSES]
    assert await count(database, Answer) == anonymous.MIN_RESPONSES


async def test_starting_over_an_expired_conversation_says_so(
    database: Database, flows: Path
) -> None:
    """Nothing closed it yet (the sweep runs every few minutes): starting the flow again
    closes it as expired and begins anew — and the reply says so, for the channel to tell."""
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    svc = Surveys(database, FlowCatalog(flows), clock=lambda: now[0])
    first = await svc.start(flow_id="nps", respondent_key="t:lou", channel="test")
    assert not first.replaced_expired
    now[0] += timedelta(days=8)
    anew = await svc.start(flow_id="nps", respondent_key="t:lou", channel="test")
    assert anew.created and anew.conversation_id != first.conversation_id
    assert anew.replaced_expired


@pytest.fixture
async def other_server(db_url: str, flows: Path) -> Any:
    """A second `parley serve` on the same database: its own connections, its own memory."""
    other = Database(db_url)
    yield Surveys(other, FlowCatalog(flows))
    await other.dispose()


async def stored_answers(db: Database) -> list[tuple[str, Any]]:
    async with db.reads() as session:
        rows = await session.execute(select(Answer.step_id, Answer.value).order_by(Answer.id))
        return [tuple(row) for row in rows]  # type: ignore[misc]


async def say(svc: Surveys, conversation: str, key: str, step: str, value: Any) -> Any:
    return await svc.answer(
        conversation_id=conversation, respondent_key=key, step=step, value=value
    )


async def test_the_next_answer_starts_from_what_this_server_saved(svc: Surveys) -> None:
    """The conversation is kept in memory between answers while it is open, and only then."""
    started = await svc.start(flow_id="nps", respondent_key="t:mem", channel="test")
    assert len(svc.recent) == 1
    for step, value in (("score", 9), ("why", "fast"), ("role", "pm")):
        await svc.answer(
            conversation_id=started.conversation_id, respondent_key="t:mem", step=step, value=value
        )
    assert len(svc.recent) == 0  # completed: nothing left to answer


@pytest.mark.parametrize("elsewhere", ["answer", "stop", "opt_out", "forget"])
async def test_a_change_another_server_made_is_honoured_by_the_next_answer(
    svc: Surveys, other_server: Surveys, database: Database, elsewhere: str
) -> None:
    """What this server remembers is never taken over what another server stored since."""
    key = "t:two"
    started = await svc.start(flow_id="nps", respondent_key=key, channel="test")
    conversation = started.conversation_id
    if elsewhere == "answer":
        await say(other_server, conversation, key, "score", 3)
        with pytest.raises(NotCurrentStep):  # "score" was answered, with another value
            await say(svc, conversation, key, "score", 9)
        reply = await say(svc, conversation, key, "why", "slow")
        assert reply.step == "role"
        assert await stored_answers(database) == [("score", 3), ("why", "slow")]
        return
    if elsewhere == "stop":
        await other_server.stop(conversation_id=conversation, respondent_key=key)
        refused: type[Exception] = ConversationClosed
    elif elsewhere == "opt_out":
        await other_server.opt_out(respondent_key=key, source="test")
        refused = OptedOut
    else:
        await privacy.forget(other_server.db, key=key)
        refused = ConversationNotFound
    with pytest.raises(refused):
        await say(svc, conversation, key, "score", 9)
    assert await stored_answers(database) == []


@pytest.mark.parametrize("elsewhere", ["answer", "opt_out"])
async def test_an_answer_that_rolled_back_is_not_remembered(
    svc: Surveys, other_server: Surveys, database: Database, elsewhere: str
) -> None:
    """A save that rolled back must leave nothing to trust: another server may write the
    same version number next, with other content."""
    key = "t:aba"
    started = await svc.start(flow_id="nps", respondent_key=key, channel="test")
    conversation = started.conversation_id

    def refuse(conn: Connection, reply: Any) -> None:
        raise RuntimeError("the channel could not claim the next question")

    with pytest.raises(RuntimeError):  # score 2 is saved, then rolled back
        await svc.answer(
            conversation_id=conversation, respondent_key=key, step="score", value=2, within=refuse
        )
    if elsewhere == "opt_out":
        await other_server.opt_out(respondent_key=key, source="test")
        with pytest.raises(OptedOut):
            await say(svc, conversation, key, "why", "x")
        assert await stored_answers(database) == []
        return
    await say(other_server, conversation, key, "score", 10)
    reply = await say(svc, conversation, key, "why", "x")
    assert reply.step == "role"
    assert await stored_answers(database) == [("score", 10), ("why", "x")]
    async with database.reads() as session:
        state = json.loads((await session.get(Conversation, conversation)).state)  # type: ignore[union-attr]
    assert state["answers"] == {"score": 10, "why": "x"}


def test_what_is_remembered_goes_after_a_while() -> None:
    from bot.services.recent import RecentConversations, Saved

    now = [0.0]
    recent = RecentConversations(limit=2, keep_for=60, clock=lambda: now[0])

    def saved(cid: str) -> Saved:
        row = conversations.sql.ConversationRow(cid, 1, "nps", 1, "active", "{}", 1, None, utcnow())
        return Saved(row, None, None, None)  # type: ignore[arg-type]

    recent.keep(saved("a"))
    now[0] = 30
    recent.keep(saved("b"))
    recent.keep(saved("c"))  # over the limit: the oldest goes
    assert recent.take("a") is None and len(recent) == 2
    now[0] = 95  # "b" and "c" were kept at 30: older than a minute now
    recent.let_go()
    assert len(recent) == 0
    recent.keep(saved("d"))
    now[0] = 200
    assert recent.take("d") is None  # too old to trust, even if still there


async def test_a_start_rolled_back_within_a_batch_pins_no_other_start_to_its_version(
    svc: Surveys,
) -> None:
    """Three first starts arrive together (one SQLite transaction, a savepoint each): the
    first rolls back, the second stores another flow's version (SQLite may give it the id
    that just rolled back), the third must still run on its own flow's version."""

    def broken_within(conn: Any, reply: Any) -> None:
        raise ValueError("the channel's part failed")

    outcomes = await asyncio.gather(
        svc.start(flow_id="nps", respondent_key="web:one", channel="test", within=broken_within),
        svc.start(flow_id="anon", respondent_key="web:two", channel="test"),
        svc.start(flow_id="nps", respondent_key="web:three", channel="test"),
        return_exceptions=True,
    )
    assert isinstance(outcomes[0], ValueError)
    assert sorted(await flows_and_their_versions(svc.db)) == [("anon", "anon"), ("nps", "nps")]


async def test_an_opt_out_between_reading_the_person_and_starting_is_seen(
    svc: Surveys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another server opts the person out after this start read their row (as it was): the
    start sees it once it holds the row, and opens nothing."""
    from bot.store import statements

    await svc.opt_out(respondent_key="t:late", source="test")
    stale = statements.find_respondent

    def as_read_before(conn: Connection, *, key: str) -> Any:
        row = stale(conn, key=key)
        return dataclasses.replace(row, opted_out=False) if row is not None else None

    monkeypatch.setattr(statements, "find_respondent", as_read_before)
    with pytest.raises(OptedOut):
        await svc.start(flow_id="nps", respondent_key="t:late", channel="test")
    assert await count(svc.db, Conversation) == 0
