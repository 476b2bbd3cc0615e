"""The Slack channel (slack-bolt AsyncApp mounted on the same aiohttp app)."""

from aiohttp import web


def setup(app: web.Application) -> None:
    raise NotImplementedError("Slack support is not built yet")
