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


async def test_the_wal_is_emptied_without_waiting_for_readers(
    sqlite_database: Database,
) -> None:
    """A passive checkpoint leaves deleted rows' old pages in -wal; the server's scheduled
    scrub empties it — and with a reader in the way gives up at once rather than hold every
    write up while it waits (it tries again a few minutes later)."""
    wal = Path(db_file(sqlite_database) + "-wal")
    await sqlite_database.run(lambda conn: sql.suppress(conn, key="web:gone", now=utcnow()))
    assert wal.stat().st_size > 0
    reader = sqlite3.connect(db_file(sqlite_database), isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM suppression").fetchone()  # a snapshot held open
    try:
        assert await sqlite_database.scrub(wait=False) is False
    finally:
        reader.execute("COMMIT")
        reader.close()
    assert await sqlite_database.scrub(wait=False) is True
    assert wal.stat().st_size == 0
    assert await sqlite_database.read(suppressions) == 1


def wal_restarts(path: str) -> int:
    """The WAL header's checkpoint sequence number: how many times the WAL started over."""
    with open(path + "-wal", "rb") as wal:
        return int.from_bytes(wal.read(16)[12:16], "big")


async def test_the_wal_starts_over_while_writes_keep_coming(
    sqlite_database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under a steady load the WAL does not grow for as long as the load lasts: after each
    checkpoint the loop copies back what came meanwhile, and the next write starts it over."""
    from bot.store import sqlite_runner

    monkeypatch.setattr(sqlite_runner, "CHECKPOINT_EVERY", 50)
    runner = sqlite_database._sqlite
    assert runner is not None
    path = db_file(sqlite_database)
    n = 0

    def add(conn: Connection) -> None:
        sql.suppress(conn, key=f"web:{n}", now=utcnow())

    # One after another, never a pause for the WAL to empty itself. A checkpoint's thread
    # is slower on a busy machine: allow more writes there, but the WAL must keep restarting.
    for _ in range(3000):
        n += 1
        await sqlite_database.run(add)
        if n % 50 == 0 and wal_restarts(path) >= 4:
            break
    assert wal_restarts(path) >= 4
    assert await sqlite_database.read(suppressions) == n
