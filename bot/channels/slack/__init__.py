"""The Slack channel: slack-bolt's ``AsyncApp`` mounted on Parley's aiohttp application.

``setup(app)`` adds the routes (``POST /slack/events``; ``GET /slack/install`` and
``/slack/oauth_redirect`` when OAuth is configured) and the start-up/shutdown context that
builds the Bolt app, its Web API client and, with ``SLACK_APP_TOKEN``, the Socket Mode
connection. Only this package (and the app factory) imports slack_bolt / slack_sdk.
"""

from __future__ import annotations

from aiohttp import web


def setup(app: web.Application) -> None:
    from bot.app import SETTINGS
    from bot.channels.slack.app import (
        EVENTS_PATH,
        INSTALL_PATH,
        REDIRECT_PATH,
        check_settings,
        events,
        lifecycle,
        oauth,
    )

    settings = app[SETTINGS]
    check_settings(settings)
    if settings.slack_signing_secret:
        app.router.add_post(EVENTS_PATH, events)
    if settings.slack_client_id:
        app.router.add_get(INSTALL_PATH, oauth)
        app.router.add_get(REDIRECT_PATH, oauth)
    app.cleanup_ctx.append(lifecycle)
