"""The App Home: respondents see their open and past surveys and the opt-out toggle;
researchers also see the flows, their headline numbers and a link to the dashboard."""

from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING, Any

from slack_sdk.web.async_client import AsyncWebClient

from bot.channels.slack import blocks
from bot.channels.slack.people import respondent_key
from bot.errors import ParleyError
from bot.services.results import counted, flow_results
from bot.store import slack as store

if TYPE_CHECKING:
    from bot.channels.slack.app import SlackRuntime

log = logging.getLogger("parley.slack")
MAX_FLOWS_ON_HOME = 15
MAX_OPEN_SHOWN = 20  # a Home view holds 100 blocks
MAX_PAST = 10


async def respondent_blocks(runtime: SlackRuntime, key: str) -> list[dict[str, Any]]:
    surveys = runtime.surveys
    out: list[dict[str, Any]] = [{"type": "header", "text": blocks.plain("Your surveys", 150)}]
    opted_out = await surveys.is_opted_out(respondent_key=key)
    open_replies = [] if opted_out else await surveys.open_conversations(respondent_key=key)
    for reply in open_replies[:MAX_OPEN_SHOWN]:  # room left for the opt-out and research parts
        out.append(
            {
                "type": "section",
                "text": blocks.mrkdwn(
                    f"*{runtime.catalog.title(reply.flow_id, reply.flow_id)}* — waiting for your answer"
                ),
                "accessory": blocks.button(
                    "Resume", blocks.RESUME, blocks.encode(reply.conversation_id), style="primary"
                ),
            }
        )
    if len(open_replies) > MAX_OPEN_SHOWN:
        more = len(open_replies) - MAX_OPEN_SHOWN
        out.append(blocks.context(f"…and {more} more waiting for you."))
    past = await runtime.db.read(
        partial(store.past_conversations, respondent_key=key, limit=MAX_PAST)
    )
    if not open_replies:
        out.append(blocks.section("No survey is waiting for you."))
        welcome = runtime.respondents.welcome_flow() if runtime.respondents is not None else None
        if welcome is not None and not past and not opted_out:
            out.append(
                {
                    "type": "actions",
                    "elements": [
                        blocks.button(f"Start: {welcome.title}", blocks.START, welcome.id)
                    ],
                }
            )
    if past:
        lines = [
            f"• {runtime.catalog.title(c.flow_id, c.flow_id)} — {c.status} {c.updated_at:%Y-%m-%d}"
            for c in past
        ]
        out.append(blocks.context("Past surveys:\n" + "\n".join(lines)))
    toggle: dict[str, Any] = {
        "type": "checkboxes",
        "action_id": blocks.HOME_OPT_OUT,
        "options": [
            {
                "text": blocks.mrkdwn("*Don't send me surveys*", blocks.MAX_OPTION_TEXT),
                "value": "opt_out",
            }
        ],
    }
    if opted_out:
        toggle["initial_options"] = toggle["options"]
    out.append({"type": "divider"})
    out.append({"type": "actions", "block_id": "parley:home:optout", "elements": [toggle]})
    if opted_out:
        out.append(blocks.context("You opted out: Parley will not survey you again."))
    return out


async def researcher_blocks(runtime: SlackRuntime) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [
        {"type": "divider"},
        {"type": "header", "text": blocks.plain("Research", 150)},
    ]
    runtime.catalog.refresh()
    flows = runtime.catalog.all()
    for flow in flows[:MAX_FLOWS_ON_HOME]:
        try:
            headline = (await flow_results(runtime.db, flow)).headline
        except ParleyError as err:  # one broken flow must not blank the whole Home
            headline = f"results unavailable: {err.message}"
        out.append(
            blocks.section(
                f"*{flow.title}* (`{flow.id}`) · {counted(flow.question_count, 'question')}\n{headline}"
            )
        )
    if len(flows) > MAX_FLOWS_ON_HOME:
        out.append(blocks.context(f"…and {len(flows) - MAX_FLOWS_ON_HOME} more: `/survey flows`"))
    if not flows:
        out.append(blocks.section("No flows yet: add YAML files to the flows folder."))
    url = runtime.settings.public_url.rstrip("/")
    if url:
        out.append(
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": blocks.plain("Open the dashboard", 75),
                        "url": f"{url}/dashboard"[:3000],
                        "action_id": blocks.DASHBOARD,
                    }
                ],
            }
        )
    out.append(blocks.context("`/survey help` lists the researcher commands."))
    return out


async def build(
    runtime: SlackRuntime, client: AsyncWebClient, *, team_id: str | None, user_id: str
) -> dict[str, Any]:
    key = respondent_key(team_id, user_id)
    content = await respondent_blocks(runtime, key)
    if await runtime.researchers.allows(client, team_id, user_id):
        content += await researcher_blocks(runtime)
    return {"type": "home", "blocks": content[: blocks.MAX_BLOCKS_VIEW]}


async def publish(
    runtime: SlackRuntime, client: AsyncWebClient, *, team_id: str | None, user_id: str
) -> None:
    view = await build(runtime, client, team_id=team_id, user_id=user_id)
    await client.views_publish(user_id=user_id, view=view)
