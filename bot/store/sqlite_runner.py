"""Short SQLite transactions run on the event loop; a busy database is waited for in a thread.

Why on the loop: an answer's transaction takes a few hundred microseconds, and handing it to
a thread cost more than that. The loop and the thread take turns on the GIL, and after every
socket call the loop waited for the thread to give it back (up to the 5 ms switch interval):
``bench/web_api.py`` served about half as many answers per second that way.

Why a thread at all: the loop's connection never waits (``busy_timeout`` 0). When another
process holds the write lock (``parley forget`` from a shell, a second server), ``BEGIN
IMMEDIATE`` fails at once, before the body ran, and the body goes to the single writer
thread, whose connection waits in SQLite's busy handler without blocking the loop.

Why group commit: writing the WAL at commit was the largest single cost of an answer. The
bodies that arrive while the loop is busy are run as one transaction, each in its own
savepoint (a body that raises undoes only its own writes), and committed once; each caller
hears back only after that commit, so an acknowledged answer is always stored.

Why checkpoints in a thread: SQLite copies the WAL back into the database file (and syncs
it) inside the commit that crosses ``wal_autocheckpoint``, and the loop would stall for the
sync. The loop's connection never checkpoints on commit; every ``CHECKPOINT_EVERY`` writes a
thread runs a passive checkpoint, which waits for nobody and blocks no one. The WAL starts
over only once every frame in it has been copied back, which never happened while writes
kept coming: it grew by some 40 KB per respondent for as long as the load lasted, and every
commit got slower with it. So when the thread is done, the loop copies the few frames
written meanwhile itself (``_catch_up``), and the next write starts the WAL over. A
passive checkpoint leaves old page images in the ``-wal`` file, though, deleted rows among them (``parley
forget`` from a shell cannot empty it while the server reads): ``truncate_wal`` empties it,
and the server's scheduler calls it every few minutes without waiting for readers (a reader
in the way means "next time"; waiting would hold every write up for as long).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import Engine
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError

from bot.errors import DatabaseError

READER_THREADS = 2
READONLY = "parley_readonly"  # conn.info / execution option: BEGIN (read) or BEGIN IMMEDIATE
CHECKPOINT_EVERY = 1000  # bodies written (about 10 MB of WAL: each checkpoint syncs twice)
CLOSED = "the database is closed (Parley is shutting down)"
T = TypeVar("T")
log = logging.getLogger(__name__)


class _Busy(Exception):
    """Another connection holds the lock; no body has run."""


# The BEGIN is sent straight to the driver (see database._sqlite_begin), so its error is
# sqlite3's own; statements run through SQLAlchemy raise its wrapper.
LOCK_ERRORS = (OperationalError, sqlite3.OperationalError)


def is_busy(err: Exception) -> bool:
    text = str(getattr(err, "orig", err)).lower()
    return "database is locked" in text or "database is busy" in text


@dataclass
class _Write:
    body: Callable[[Connection], Any]
    future: asyncio.Future[Any]


class _Failed:
    """A body's exception, kept apart from values a body may legitimately return."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def _commit(conn: Connection, batch: list[_Write]) -> list[Any]:
    """Run the batch as one transaction; returns a value or a _Failed per body. Raises _Busy
    (nothing ran) or, when the transaction as a whole fails, that error."""
    conn.info[READONLY] = False  # read by the "begin" listener
    try:
        transaction = conn.begin()
    except LOCK_ERRORS as err:
        if is_busy(err):
            raise _Busy from err
        raise
    outcomes: list[Any] = []
    with transaction:
        if len(batch) == 1:  # no savepoint needed: its failure is the transaction's
            return [batch[0].body(conn)]
        # Savepoints straight on the driver: SQLAlchemy's begin_nested() cost more per body
        # than the commit the batch saves. Bodies nest their own savepoints freely inside.
        driver = conn.connection.driver_connection
        assert driver is not None
        for write in batch:
            driver.execute("SAVEPOINT parley_body")
            try:
                outcomes.append(write.body(conn))
            except Exception as err:
                driver.execute("ROLLBACK TO parley_body")
                outcomes.append(_Failed(err))
            driver.execute("RELEASE parley_body")
    return outcomes


class SqliteRunner:
    """Runs synchronous Core bodies as transactions on one SQLite database file.

    Writes from this process never wait for each other (the loop runs one batch at a time),
    and reads never wait for writes (WAL), so a "locked" error on the loop's connection can
    only mean another process holds the lock.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._loop_conn: Connection | None = None
        self._thread_conn: Connection | None = None  # the writer thread's, used only there
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="parley-sqlite-writer")
        self._readers = ThreadPoolExecutor(
            READER_THREADS, thread_name_prefix="parley-sqlite-reader"
        )
        self._checkpointer = ThreadPoolExecutor(1, thread_name_prefix="parley-sqlite-checkpoint")
        self._queue: list[_Write] = []
        self._writes = 0  # on the loop's connection since the last checkpoint
        self._checkpointing: asyncio.Future[None] | None = None
        self._catch_up_due = False  # a thread checkpoint finished: see _catch_up
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise DatabaseError(CLOSED)

    async def write(self, body: Callable[[Connection], T]) -> T:
        self._check_open()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.append(_Write(body, future))
        if len(self._queue) == 1:
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        batch = [write for write in self._queue if not write.future.cancelled()]
        self._queue = []
        if not batch:
            return
        if self._closed:  # cannot happen through write(); never reopen a closed database
            self._deliver(batch, [_Failed(DatabaseError(CLOSED))] * len(batch))
            return
        try:
            outcomes = _commit(self._loop_connection(), batch)
        except _Busy:
            loop = asyncio.get_running_loop()
            waiting = loop.run_in_executor(self._writer, self._commit_in_thread, batch)
            waiting.add_done_callback(lambda done: self._settle(batch, done))
            return
        except Exception as err:
            outcomes = [_Failed(err)] * len(batch)
        else:
            self._count_writes(len(batch))
        self._deliver(batch, outcomes)
        if self._catch_up_due:
            self._catch_up()

    def _settle(self, batch: list[_Write], done: asyncio.Future[list[Any]]) -> None:
        error = done.exception()
        if error is not None and not isinstance(error, Exception):
            error = RuntimeError(f"the database write was interrupted: {error!r}")
        self._deliver(batch, [_Failed(error)] * len(batch) if error else done.result())

    @staticmethod
    def _deliver(batch: list[_Write], outcomes: list[Any]) -> None:
        for write, outcome in zip(batch, outcomes, strict=True):
            if write.future.done():
                continue
            if isinstance(outcome, _Failed):
                write.future.set_exception(outcome.error)
            else:
                write.future.set_result(outcome)

    def _count_writes(self, count: int) -> None:
        self._writes += count
        if self._writes >= CHECKPOINT_EVERY and self._checkpointing is None:
            self._writes = 0
            self._checkpointing = asyncio.get_running_loop().run_in_executor(
                self._checkpointer, self._checkpoint
            )
            self._checkpointing.add_done_callback(self._checkpoint_done)

    def _checkpoint(self) -> None:
        conn = self._engine.raw_connection()  # DB-API level: no transaction around the PRAGMA
        try:
            conn.driver_connection.execute("PRAGMA wal_checkpoint(PASSIVE)")  # type: ignore[union-attr]
        finally:
            conn.close()

    async def truncate_wal(self, *, wait: bool = True) -> bool:
        """Checkpoint everything and empty the WAL file; False when a reader kept it busy.
        ``wait=False``: give up at once rather than hold writes up while readers finish."""
        self._check_open()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._checkpointer, partial(self._truncate, wait))

    def _truncate(self, wait: bool = True) -> bool:
        if wait:
            conn = self._engine.raw_connection()
            driver: Any = conn.driver_connection
        else:  # a connection of its own, that waits for nobody (a pooled one would keep that)
            conn = driver = sqlite3.connect(str(self._engine.url.database), timeout=0)
        try:
            row = driver.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            conn.close()
        return row is not None and row[0] == 0

    def _checkpoint_done(self, future: asyncio.Future[None]) -> None:
        self._checkpointing = None
        if not future.cancelled() and future.exception() is not None:
            log.warning("SQLite checkpoint failed (will try again): %s", future.exception())
            return
        self._catch_up_due = True  # after the next batch: writes are usually waiting now

    def _catch_up(self) -> None:
        """Copy back the few pages written while the thread checkpointed, on the loop and
        between transactions, so the WAL starts over at the next write (a couple of
        milliseconds, about once per ``CHECKPOINT_EVERY`` writes)."""
        self._catch_up_due = False
        if self._closed or self._loop_conn is None:
            return
        driver: Any = self._loop_conn.connection.driver_connection
        try:
            driver.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as err:  # e.g. another process checkpointing: next time
            log.debug("SQLite catch-up checkpoint skipped: %s", err)

    async def read(self, body: Callable[[Connection], T]) -> T:
        self._check_open()
        conn = self._loop_connection()
        conn.info[READONLY] = True
        try:
            with conn.begin():
                return body(conn)
        except LOCK_ERRORS as err:
            # Rare under WAL (e.g. another process recovering the WAL): wait in a thread.
            if not is_busy(err):
                raise
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self._in_reader, body)

    def _loop_connection(self) -> Connection:
        if self._loop_conn is None or self._loop_conn.invalidated:
            conn = self._engine.connect()
            driver = conn.connection.driver_connection
            driver.execute("PRAGMA busy_timeout=0")  # type: ignore[union-attr]
            driver.execute("PRAGMA wal_autocheckpoint=0")  # type: ignore[union-attr]
            self._loop_conn = conn
        return self._loop_conn

    def _commit_in_thread(self, batch: list[_Write]) -> list[Any]:
        if self._thread_conn is None or self._thread_conn.invalidated:
            self._thread_conn = self._engine.connect()
        try:
            return _commit(self._thread_conn, batch)
        except _Busy as busy:  # busy_timeout ran out: the other process kept the lock
            raise busy.__cause__ or busy from None

    def _in_reader(self, body: Callable[[Connection], T]) -> T:
        with self._engine.connect() as conn:
            conn.info[READONLY] = True
            with conn.begin():
                return body(conn)

    def _close_thread_conn(self) -> None:
        if self._thread_conn is not None:
            self._thread_conn.close()
            self._thread_conn = None

    async def close(self) -> None:
        """Writes already accepted are committed, not dropped; later ones are refused."""
        if self._queue:
            self._flush()
        self._closed = True
        if self._checkpointing is not None:
            await asyncio.wait([self._checkpointing])
        if self._loop_conn is not None:
            self._loop_conn.close()
            self._loop_conn = None
        await asyncio.get_running_loop().run_in_executor(self._writer, self._close_thread_conn)
        for pool in (self._writer, self._readers, self._checkpointer):
            pool.shutdown(wait=True)
        self._engine.dispose()
