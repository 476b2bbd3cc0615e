"""SQLite transactions run on the event loop, and wait for another process's lock in a thread.

The loop's connection never waits: if another process holds the write lock, the body must
go to the writer thread (so the loop keeps serving) and still commit once the lock is free.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Connection, func, select

from bot.store import statements as sql
from bot.store.database import Database
from bot.store.models import Suppression, utcnow

S = Suppression.__table__


def suppressions(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(S)).scalar_one())


def db_file(database: Database) -> str:
    return database.url.split("///", 1)[1]


async def test_write_waits_for_another_process_without_blocking_the_loop(
    sqlite_database: Database,
) -> None:
    other = sqlite3.connect(db_file(sqlite_database), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        write = asyncio.create_task(
            sqlite_database.run(lambda conn: sql.suppress(conn, key="web:a", now=utcnow()))
        )
        await asyncio.sleep(0.2)
        assert not write.done(), "the write should be waiting for the lock"
        # the loop is free: a read (WAL readers never wait for the writer) completes now
        assert await sqlite_database.read(suppressions) == 0
    finally:
        other.execute("COMMIT")
        other.close()
    await asyncio.wait_for(write, 10)
    assert await sqlite_database.read(suppressions) == 1
    # and the loop's own connection is used again afterwards
    await sqlite_database.run(lambda conn: sql.suppress(conn, key="web:b", now=utcnow()))
    assert await sqlite_database.read(suppressions) == 2


@pytest.mark.parametrize("locked", [False, True], ids=["on-loop", "in-writer-thread"])
async def test_a_failing_body_stores_nothing(sqlite_database: Database, locked: bool) -> None:
    def body(conn: Connection) -> None:
        sql.suppress(conn, key="web:a", now=utcnow())
        raise ValueError("boom")

    other = sqlite3.connect(db_file(sqlite_database), isolation_level=None)
    if locked:
        other.execute("BEGIN IMMEDIATE")
    attempt = asyncio.create_task(sqlite_database.run(body))
    await asyncio.sleep(0.05)
    if locked:
        other.execute("COMMIT")
    other.close()
    with pytest.raises(ValueError, match="boom"):
        await attempt
    assert await sqlite_database.read(suppressions) == 0
    await sqlite_database.run(lambda conn: sql.suppress(conn, key="web:b", now=utcnow()))
    assert await sqlite_database.read(suppressions) == 1


async def test_writes_arriving_together_fail_alone(sqlite_database: Database) -> None:
    """Concurrent bodies share one commit; one that raises undoes only its own writes."""

    def failing(conn: Connection) -> None:
        sql.suppress(conn, key="web:bad", now=utcnow())
        raise ValueError("boom")

    def good(key: str) -> Callable[[Connection], str]:
        def body(conn: Connection) -> str:
            sql.suppress(conn, key=key, now=utcnow())
            return key

        return body

    results = await asyncio.gather(
        sqlite_database.run(good("web:a")),
        sqlite_database.run(failing),
        sqlite_database.run(good("web:b")),
        return_exceptions=True,
    )
    assert results[0] == "web:a" and results[2] == "web:b"
    assert isinstance(results[1], ValueError)
    assert await sqlite_database.read(suppressions) == 2
    found = await sqlite_database.read(lambda conn: sql.is_suppressed(conn, key="web:bad"))
    assert found is False


async def test_a_body_sees_the_writes_of_bodies_before_it(sqlite_database: Database) -> None:
    """Two starts of the same thing in one batch: the second sees the first (no duplicate)."""

    def once(conn: Connection) -> bool:
        if sql.is_suppressed(conn, key="web:a"):
            return False
        sql.suppress(conn, key="web:a", now=utcnow())
        return True

    results = await asyncio.gather(*(sqlite_database.run(once) for _ in range(5)))
    assert sorted(results) == [False, False, False, False, True]
    assert await sqlite_database.read(suppressions) == 1


async def test_close_commits_accepted_writes_and_refuses_later_ones(tmp_path: Path) -> None:
    from bot.errors import DatabaseError

    database = Database(str(tmp_path / "closing.db"))
    await database.ensure_ready()
    accepted = asyncio.create_task(
        database.run(lambda conn: sql.suppress(conn, key="web:late", now=utcnow()))
    )
    await asyncio.sleep(0)  # queued, not yet flushed
    await database.dispose()
    await accepted  # it was committed during close, not dropped
    with pytest.raises(DatabaseError, match="closed"):
        await database.run(lambda conn: sql.suppress(conn, key="web:later", now=utcnow()))
    reopened = Database(str(tmp_path / "closing.db"))
    try:
        assert await reopened.read(lambda conn: sql.is_suppressed(conn, key="web:late"))
    finally:
        await reopened.dispose()


async def test_the_server_empties_the_wal_of_what_forget_could_not(
    sqlite_database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A forget from a shell while the server reads cannot empty -wal; the server's own
    checkpoints do, at most EMPTY_WAL_EVERY seconds apart, so deleted rows' old page images
    do not stay in the file for as long as the server runs."""
    from bot.store import sqlite_runner

    monkeypatch.setattr(sqlite_runner, "CHECKPOINT_EVERY", 5)
    wal = Path(db_file(sqlite_database) + "-wal")

    runner = sqlite_database._sqlite
    assert runner is not None

    async def write_until_a_checkpoint(prefix: str) -> int:
        """Write until a checkpoint starts, then wait for it; returns the writes."""
        for i in range(100):
            key = f"web:{prefix}{i}"
            await sqlite_database.run(
                lambda conn, key=key: sql.suppress(conn, key=key, now=utcnow())
            )
            if runner._checkpointing is not None:
                await runner._checkpointing
                await asyncio.sleep(0)  # its done-callback
                return i + 1
        raise AssertionError("no checkpoint started")

    monkeypatch.setattr(sqlite_runner, "EMPTY_WAL_EVERY", 3600.0)
    written = await write_until_a_checkpoint("a")
    assert wal.stat().st_size > 0  # a passive checkpoint leaves the old pages in the file
    monkeypatch.setattr(sqlite_runner, "EMPTY_WAL_EVERY", 0.0)
    written += await write_until_a_checkpoint("b")
    assert wal.stat().st_size == 0
    assert await sqlite_database.read(suppressions) == written
