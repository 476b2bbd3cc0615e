"""One queue for database writers when the store is SQLite.

SQLite has a single writer, and a writer that finds the lock taken waits in SQLite's busy
handler, which sleeps in steps of up to 100 ms. Under a burst of clicks that sleeping, not
the work, dominated (bench/slack_actions.py: 0.07 of the bare Bolt floor). Queueing writers
on an asyncio semaphore hands the lock over at once. PostgreSQL needs no queue.
"""

from __future__ import annotations

import asyncio

from bot.store.database import Database

POSTGRES_WRITERS = 64


def write_gate(db: Database) -> asyncio.Semaphore:
    return asyncio.Semaphore(1 if db.is_sqlite else POSTGRES_WRITERS)
