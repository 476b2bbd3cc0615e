"""The aiohttp application: one process serves the web chat, the Slack endpoint and the
scheduler. Resources live in ``cleanup_ctx`` (created at start-up, closed at shutdown) and
are reached through typed ``web.AppKey``s; nothing is created at import time.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from datetime import timedelta

from aiohttp import web

from bot.config import Settings
from bot.services.catalog import FlowCatalog
from bot.services.conversations import Surveys
from bot.store.database import Database

log = logging.getLogger("parley")

SETTINGS = web.AppKey("settings", Settings)
CATALOG = web.AppKey("catalog", FlowCatalog)
DATABASE = web.AppKey("database", Database)
SURVEYS = web.AppKey("surveys", Surveys)

# The largest body any route takes: Slack's events (a 40,000-character message arrives twice,
# as text and as rich-text blocks, JSON-escaped). The public API holds itself to 64 KiB.
MAX_BODY = 1024 * 1024


def create_app(
    settings: Settings, *, catalog: FlowCatalog | None = None, freeze_heap: bool = False
) -> web.Application:
    """Build the app; flows load now so a broken flow stops start-up with its file:line."""
    from bot import scheduler
    from bot.channels import slack as slack_channel
    from bot.channels import web as web_channel

    app = web.Application(client_max_size=MAX_BODY)
    app[SETTINGS] = settings
    app[CATALOG] = catalog or FlowCatalog(settings.flows)
    app.cleanup_ctx.append(_database)
    web_channel.setup(app)
    if settings.slack_enabled:
        slack_channel.setup(app)
    else:
        log.info("Slack is not configured (no SLACK_BOT_TOKEN / SLACK_APP_TOKEN): running web-only")
    app.cleanup_ctx.append(scheduler.run_scheduler)
    if freeze_heap:
        app.on_startup.append(_freeze_heap)  # after every cleanup_ctx start-up
    return app


async def _freeze_heap(_app: web.Application) -> None:
    """What start-up made (flows, tables and compiled statements, the Slack app) lives as
    long as the process; frozen, the collector's full passes stop walking it (timed with
    ``gc.callbacks`` in ``bench/slack_actions.py``: three full passes took 0.1 s of a
    2.3 s round). For ``parley serve`` only: tests build many apps in one process, and
    frozen objects are never freed.

    The young generation is collected every 10,000 new objects rather than 700: a request
    makes a few hundred, and the default collected several times per answer, promoting
    short-lived objects into older generations only to walk them again (callgrind on
    ``bench/web_api.py``: 3% fewer instructions per request)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)


async def _database(app: web.Application) -> AsyncIterator[None]:
    db = Database(app[SETTINGS].db)
    try:
        if await db.ensure_ready():
            log.info("created a new database at %s", db.display)
        app[DATABASE] = db
        days = app[SETTINGS].recontact_days
        app[SURVEYS] = Surveys(db, app[CATALOG], recontact=timedelta(days=days) if days else None)
        yield
    finally:
        await db.dispose()
