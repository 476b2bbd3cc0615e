"""Shared by the web channel's API and browser tests: a flow with every step type, an app
factory with explicit settings (the environment never leaks in), and table counts."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from aiohttp import web
from sqlalchemy import text

from bot.app import create_app
from bot.config import load_settings
from bot.store.database import Database

ROOT = Path(__file__).resolve().parent.parent

EVERY_STEP = """\
id: every-step
kind: microsurvey
title: Every step type
intro: Hello! This flow asks one question of each kind.
steps:
  - id: hello
    type: message
    text: First, a little scale.
  - id: likely
    type: nps
    text: How likely are you to recommend us?
  - id: happy
    type: csat
    text: How satisfied are you?
  - id: easy
    type: ces
    text: How easy was it?
  - id: stars
    type: rating
    min: 1
    max: 5
    labels: {min: Bad, max: Great}
    text: Rate the docs.
  - id: need
    type: choice
    text: What matters most?
    choices:
      - {value: price, label: Low price}
      - {value: quality, label: Quality}
  - id: features
    type: multi_choice
    min_picks: 1
    max_picks: 2
    text: Which features do you use?
    choices:
      - {value: reports, label: Reports}
      - {value: alerts, label: Alerts}
      - {value: api, label: The API}
  - id: why
    type: text
    max_length: 40
    text: Why?
  - id: extra
    type: text
    required: false
    text: Anything else? (optional)
  - id: again
    type: yes_no
    text: Would you do it again?
  - id: contact
    type: email
    consent: You may email me about this.
    text: Can we contact you?
outro: All done, thank you!
"""


def make_flows(tmp_path: Path, *, starter: bool = True) -> Path:
    """A flows folder with the starter flows (welcome, nps, ...) plus ``every-step``."""
    target = tmp_path / "flows"
    if starter:
        shutil.copytree(ROOT / "flows", target)
    else:
        target.mkdir()
    (target / "every-step.yml").write_text(EVERY_STEP, encoding="utf-8")
    return target


def make_app(db: str, flows: Path, **overrides: Any) -> web.Application:
    settings: dict[str, Any] = {
        "db": db,
        "flows": flows,
        "web_secret": "",
        "allowed_origins": [],
        "api_keys": [],
        "rate_limit": "off",
        "demo_flow": "welcome",
        "slack_bot_token": "",
        "slack_app_token": "",
        "slack_client_id": "",
    }
    settings.update(overrides)
    return create_app(load_settings(**settings))


TABLES = ("respondent", "conversation", "answer", "tag", "event", "suppression")


async def counts(db_url: str) -> dict[str, int]:
    """Row counts of the tables a request could change (plus conversation versions)."""
    db = Database(db_url)
    try:
        async with db.engine.connect() as conn:
            result = {
                t: (await conn.execute(text(f"SELECT count(*) FROM {t}"))).scalar_one()
                for t in TABLES
            }
            versions = await conn.execute(
                text("SELECT coalesce(sum(version), 0) FROM conversation")
            )
            result["conversation_versions"] = int(versions.scalar_one())
            return result
    finally:
        await db.dispose()


async def rows(db_url: str, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    db = Database(db_url)
    try:
        async with db.engine.connect() as conn:
            return [tuple(r) for r in (await conn.execute(text(sql), params)).all()]
    finally:
        await db.dispose()


async def answers(db_url: str) -> list[tuple[str, Any]]:
    """(step, value) of every stored answer in order, values decoded on every database."""
    from sqlalchemy import select

    from bot.store.models import Answer

    db = Database(db_url)
    try:
        async with db.reads() as session:
            result = await session.execute(select(Answer.step_id, Answer.value).order_by(Answer.id))
            return [(step, value) for step, value in result.all()]
    finally:
        await db.dispose()
