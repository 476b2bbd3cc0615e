"""``/survey``: a router of researcher subcommands other issues extend.

Add a subcommand from anywhere that is imported before start-up::

    from bot.channels.slack.commands import router, Subcommand

    async def segments(ctx: CommandContext) -> None:
        await ctx.reply("…")

    router.add(Subcommand("segments", "segments [FLOW]", "segment sizes", segments))

Every invocation is acked at once (Slack wants an answer within 3 s); the permission check
and the work happen after the ack and answer through ``respond()`` (ephemeral).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from slack_sdk.web.async_client import AsyncWebClient

from bot.channels.slack import blocks
from bot.errors import ParleyError
from bot.services.results import counted, flow_results, render_text

if TYPE_CHECKING:
    from bot.channels.slack.app import SlackRuntime

log = logging.getLogger("parley.slack")
COMMAND = "/survey"
MAX_COMMAND_TEXT = 2000
REFUSAL = (
    "Sorry — `/survey` is for researchers. Ask your Parley admin to add you to PARLEY_RESEARCHERS."
)


@dataclass(frozen=True)
class CommandContext:
    runtime: SlackRuntime
    client: AsyncWebClient
    respond: Callable[..., Awaitable[Any]]
    team_id: str | None
    user_id: str
    channel_id: str
    args: list[str]

    async def reply(self, text: str, blocks_: list[dict[str, Any]] | None = None) -> None:
        """Answer the researcher only (ephemeral)."""
        await self.respond(text=blocks.cut(text, 3000), blocks=blocks_, response_type="ephemeral")


Handler = Callable[[CommandContext], Awaitable[None]]


@dataclass(frozen=True)
class Subcommand:
    name: str
    usage: str
    summary: str
    handler: Handler


class Router:
    """Subcommand name → handler, with the help text generated from what is registered."""

    def __init__(self) -> None:
        self._subcommands: dict[str, Subcommand] = {}

    def add(self, subcommand: Subcommand) -> Subcommand:
        self._subcommands[subcommand.name.lower()] = subcommand
        return subcommand

    def subcommand(self, name: str, usage: str, summary: str) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.add(Subcommand(name, usage, summary, handler))
            return handler

        return register

    def get(self, name: str) -> Subcommand | None:
        return self._subcommands.get(name.lower())

    @property
    def names(self) -> list[str]:
        return sorted(self._subcommands)

    def help_text(self, unknown: str | None = None) -> str:
        lines = [f"Unknown subcommand `{blocks.cut(unknown, 40)}`. " if unknown else ""]
        lines[0] += f"Usage of `{COMMAND}`:"
        for name in self.names:
            sub = self._subcommands[name]
            lines.append(f"• `{COMMAND} {sub.usage}` — {sub.summary}")
        return "\n".join(lines)

    async def dispatch(self, ctx: CommandContext) -> None:
        name = ctx.args[0].lower() if ctx.args else "help"
        sub = self.get(name)
        if sub is None:
            await ctx.reply(self.help_text(unknown=name))
            return
        await sub.handler(ctx)


router = Router()


@router.subcommand("help", "help", "this list")
async def help_command(ctx: CommandContext) -> None:
    await ctx.reply(router.help_text())


def _changed(source: str) -> str:
    try:
        moment = datetime.fromtimestamp(os.stat(source).st_mtime, UTC)
    except (OSError, ValueError):
        return "—"
    return f"{moment:%Y-%m-%d %H:%M} UTC"


@router.subcommand("flows", "flows", "the flows, with question count and last change")
async def flows_command(ctx: CommandContext) -> None:
    catalog = ctx.runtime.catalog
    catalog.refresh()
    flows = catalog.all()
    if not flows:
        await ctx.reply(
            "No flows yet: add YAML files to the flows folder and run `parley validate`."
        )
        return
    lines = [
        f"• `{f.id}` — {f.title} · {counted(f.question_count, 'question')} · changed {_changed(f.path)}"
        for f in flows
    ]
    text = "*Flows*\n" + "\n".join(lines)
    await ctx.reply(
        text, [blocks.section(chunk) for chunk in _pieces(text)][: blocks.MAX_BLOCKS_MESSAGE]
    )


@router.subcommand(
    "results", "results FLOW", "responses, completion and scores of a flow (as `parley results`)"
)
async def results_command(ctx: CommandContext) -> None:
    if len(ctx.args) < 2:
        await ctx.reply(f"Which flow? `{COMMAND} results FLOW` — see `{COMMAND} flows`.")
        return
    flow = ctx.runtime.catalog.get(ctx.args[1][:64].lower())  # flow ids are lower case
    results = await flow_results(ctx.runtime.db, flow)
    report = render_text(results)
    body = [blocks.section(f"*{results.title}* — {results.headline}")]
    body += [blocks.preformatted(chunk) for chunk in _pieces(report, 2800)]
    await ctx.reply(f"{results.title}: {results.headline}", body[: blocks.MAX_BLOCKS_MESSAGE])


def _pieces(text: str, size: int = 2800) -> list[str]:
    pieces: list[str] = []
    current: list[str] = []
    length = 0
    for line in text.splitlines():
        line = line[:size]
        if length + len(line) + 1 > size and current:
            pieces.append("\n".join(current))
            current, length = [], 0
        current.append(line)
        length += len(line) + 1
    if current:
        pieces.append("\n".join(current))
    return pieces


def register(runtime: SlackRuntime) -> None:
    """Attach ``/survey`` to the runtime's Bolt app."""

    async def on_command(
        ack: Any, command: dict[str, Any], client: AsyncWebClient, respond: Any, context: Any
    ) -> None:
        await ack()
        user_id = str(command.get("user_id", ""))[:32]
        text = str(command.get("text") or "")[:MAX_COMMAND_TEXT]
        ctx = CommandContext(
            runtime=runtime,
            client=client,
            respond=respond,
            team_id=context.team_id,
            user_id=user_id,
            channel_id=str(command.get("channel_id", ""))[:32],
            args=text.split(),
        )
        if not await runtime.researchers.allows(client, context.team_id, user_id):
            await ctx.reply(REFUSAL)
            return
        try:
            await router.dispatch(ctx)
        except ParleyError as err:
            await ctx.reply(err.message)
        except Exception:
            log.exception("/survey %s failed", text[:100])
            await ctx.reply(
                "Something went wrong running that command; the details are in Parley's log."
            )

    runtime.bolt.command(COMMAND)(runtime.tracked(on_command))
