"""APScheduler 3 only wakes this process up; the database rows are the claims.

Each replica runs its own scheduler with jobs derived from database state, so jobs are
module-level functions that take what they need and are safe to run on every replica.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler

log = logging.getLogger("parley.scheduler")

SCHEDULER = web.AppKey("scheduler", AsyncIOScheduler)
EVERY_MINUTES = 5


async def expire_conversations(app: web.Application) -> None:
    """Close conversations whose flow's ``expires_after`` has passed."""
    from bot.app import SURVEYS

    closed = await app[SURVEYS].expire_due()
    if closed:
        log.info("expired %d conversation(s)", closed)


async def release_anonymous_answers(app: web.Application) -> None:
    """Anonymous answers join the answer table in batches (see services/anonymous.py)."""
    from bot.app import DATABASE
    from bot.services import anonymous

    moved = await anonymous.release(app[DATABASE])
    if moved:
        log.info("released %d anonymous answer(s)", moved)


async def empty_sqlite_wal(app: web.Application) -> None:
    """On SQLite, old page images in the -wal file (rows deleted by ``parley forget``, the
    anonymous queue) go within a few minutes, busy server or quiet; a reader in the way
    means next time (waiting would hold every write up). Nothing to do on PostgreSQL."""
    from bot.app import DATABASE

    await app[DATABASE].scrub(wait=False)


async def let_go_of_recent_conversations(app: web.Application) -> None:
    """What this process keeps in memory for a conversation's next answer goes within
    minutes even when no request comes (see services/recent.py)."""
    from bot.app import SURVEYS

    app[SURVEYS].recent.let_go()


async def run_scheduler(app: web.Application) -> AsyncIterator[None]:
    scheduler = AsyncIOScheduler(timezone="UTC")
    jobs = (
        expire_conversations,
        release_anonymous_answers,
        empty_sqlite_wal,
        let_go_of_recent_conversations,
    )
    for job in jobs:
        scheduler.add_job(
            job,
            "interval",
            minutes=EVERY_MINUTES,
            args=[app],
            id=job.__name__,
            coalesce=True,
            max_instances=1,
        )
    app[SCHEDULER] = scheduler
    scheduler.start()
    try:
        yield
    finally:
        scheduler.shutdown(wait=False)
